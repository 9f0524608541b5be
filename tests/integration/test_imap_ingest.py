"""IMAP ingestion end to end against a real Dovecot: exactly once, after-actions, threading,
loops, outages, IDLE push, a locked database, SIGKILL faults and a real-world corpus.

Every test talks to the session's private Dovecot (``tests/conftest.py``) with a fresh
pool user, builds its config as TOML text through :func:`parse_settings` and drives the
product through its real entry points (``poll_once``, ``run_forever``, ``MailboxWorker``,
the installed ``deskq`` script). Waiting is always on a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import func, select

import mail.imap as imap_module
from mail import imapconn, imapwire, pipeline
from mail.imap import ImapSource, connected
from mail.ingest import Ingestor, Outcome
from mail.poller import MailboxStatus, MailboxWorker, poll_once, run_forever
from store import peek, services
from store.config import MailboxSettings, parse_settings
from store.models import (
    Direction,
    MailboxState,
    Message,
    OutboxItem,
    RawSource,
    Status,
    Ticket,
    TicketFlag,
)
from store.views import TicketDetail, TicketSummary, iter_tickets, ticket_detail
from store.workspace import Workspace, open_workspace
from tests import servers
from tests.support import CORPUS, record_args, record_batch_sizes

pytestmark = pytest.mark.dovecot

SEEN = b"\\Seen"
FLAGGED = b"\\Flagged"
DESKQ = Path(sys.executable).parent / "deskq"

QUEUES = """
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
aliases = ["it@corp.example"]
auto_ack = {auto_ack}

[[queue]]
key = "hr"
name = "HR"
tag = "HR"
address = "hr@corp.example"
"""

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def new_id(tag: str = "m") -> str:
    return f"<{tag}-{uuid.uuid4().hex[:12]}@corp.example>"


def email(
    subject: str,
    *,
    message_id: str | None = None,
    sender: str = "Alice <alice@corp.example>",
    to: str = "it@corp.example",
    cc: str | None = None,
    headers: Iterable[str] = (),
    body: str = "Hello,\nit does not work.\n",
) -> bytes:
    """A small, well-formed RFC 5322 message with CRLF line endings."""
    lines = [
        f"From: {sender}",
        f"To: {to}",
        *([f"Cc: {cc}"] if cc else []),
        f"Subject: {subject}",
        f"Message-ID: {message_id or new_id()}",
        f"Date: {formatdate()}",
        *headers,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()


@dataclass
class Account:
    """A Dovecot pool user seen from the test's side (a separate IMAP connection)."""

    dovecot: servers.Dovecot
    user: str
    password: str
    env: str  # the environment variable deskq reads the password from

    @contextlib.contextmanager
    def client(self) -> Iterator[IMAPClient]:
        c = IMAPClient(self.dovecot.host, port=self.dovecot.imap_port, ssl=False, timeout=30)
        try:
            c.login(self.user, self.password)
            yield c
        finally:
            with contextlib.suppress(Exception):
                c.logout()

    def append(self, *messages: bytes, folder: str = "INBOX", flags: Iterable[bytes] = ()) -> None:
        with self.client() as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for raw in messages:
                c.append(folder, raw, flags=tuple(flags))

    def multiappend(self, messages: list[bytes], folder: str = "INBOX", chunk: int = 500) -> None:
        with self.client() as c:
            for start in range(0, len(messages), chunk):
                c.multiappend(folder, messages[start : start + chunk])

    def flags(self, folder: str = "INBOX") -> dict[int, frozenset[bytes]]:
        """UID -> flags (without the session-dependent \\Recent)."""
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            uids = c.search(["ALL"])
            got = c.fetch(uids, ["FLAGS"]) if uids else {}
            return {u: frozenset(f for f in got[u][b"FLAGS"] if f != b"\\Recent") for u in uids}

    def unseen(self, folder: str = "INBOX") -> list[int]:
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            return list(c.search(["UNSEEN"]))

    def seen(self, folder: str = "INBOX") -> list[int]:
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            return list(c.search(["SEEN"]))

    def count(self, folder: str = "INBOX") -> int:
        with self.client() as c:
            return int(c.select_folder(folder, readonly=True)[b"EXISTS"])

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.client() as c:
            return int(c.select_folder(folder, readonly=True)[b"UIDVALIDITY"])

    def folder_exists(self, folder: str) -> bool:
        with self.client() as c:
            return bool(c.folder_exists(folder))

    def mailbox_toml(
        self, name: str = "helpdesk", *, tls: bool = False, ca_file: bool = True, **options: Any
    ) -> str:
        """A ``[[mailbox]]`` table reading this account (plain on localhost, or IMAPS)."""
        d = self.dovecot
        lines = ["[[mailbox]]", f"name = {json.dumps(name)}", 'source = "imap"']
        lines.append('host = "127.0.0.1"')
        if tls:
            lines += [f"port = {d.imaps_port}", 'security = "tls"']
            if ca_file:
                lines.append(f"ca_file = {json.dumps(str(d.ca_file))}")
        else:
            lines += [f"port = {d.imap_port}", 'security = "none"']
        lines += [f"username = {json.dumps(self.user)}", f"password_env = {json.dumps(self.env)}"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
        return "\n".join(lines) + "\n"


def config_toml(
    db_url: str,
    *mailboxes: str,
    busy_timeout_ms: int | None = None,
    batch_size: int | None = None,
    auto_ack: bool = False,
    batch_bytes: int | None = None,
) -> str:
    text = f"[database]\nurl = {json.dumps(db_url)}\n"
    if busy_timeout_ms is not None:
        text += f"busy_timeout_ms = {busy_timeout_ms}\n"
    if batch_size is not None or batch_bytes is not None:
        text += "\n[ingest]\n"
        text += f"batch_size = {batch_size}\n" if batch_size is not None else ""
        text += f"batch_bytes = {batch_bytes}\n" if batch_bytes is not None else ""
    text += "\n" + "\n".join(mailboxes)
    return text + QUEUES.format(auto_ack=json.dumps(auto_ack))


@pytest.fixture
def account(dovecot: servers.Dovecot, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Account]:
    """A factory of fresh, empty mailboxes whose password is in a per-user env var."""

    def make() -> Account:
        user, password = dovecot.take_user()
        env = f"DESKQ_TEST_IMAP_PASSWORD_{user.upper()}"
        monkeypatch.setenv(env, password)
        return Account(dovecot, user, password, env)

    return make


@pytest.fixture
def workspaces() -> Iterator[Callable[[str], Workspace]]:
    """Open workspaces from TOML text; all are closed at the end of the test."""
    opened: list[Workspace] = []

    def open_(text: str) -> Workspace:
        ws = open_workspace(parse_settings(text, "<test config>"))
        opened.append(ws)
        return ws

    yield open_
    for ws in opened:
        ws.close()


@contextlib.contextmanager
def dovecot_back_up(dovecot: servers.Dovecot) -> Iterator[None]:
    """Whatever happens in the block, leave the session's Dovecot running."""
    try:
        yield
    finally:
        if dovecot.proc is None:
            dovecot.restart()


def process_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return f"pid {pid} (gone)"


def kill_group(pgid: int) -> None:
    """Clean up whatever a killed ``deskq`` left behind in its own process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_dovecot(dovecot: servers.Dovecot) -> None:
    """SIGKILL Dovecot and wait until every process of it is gone (``kill()`` waits for
    the master only; a dying imap-login can still accept, then reset, a connection)."""
    assert dovecot.proc is not None
    pgid = dovecot.proc.pid
    dovecot.kill()
    wait_until(lambda: not process_group(pgid), 5, "Dovecot's processes to exit")


def poll_ok(ws: Workspace) -> list[MailboxStatus]:
    statuses = poll_once(ws)
    for st in statuses:
        assert st.failures == 0, f"mailbox {st.name} failed: {st.last_error}"
    return statuses


def outcomes_of(ws: Workspace) -> list[Outcome]:
    return [o for st in poll_ok(ws) for o in st.outcomes]


def count(ws: Workspace, model: Any, *where: Any) -> int:
    with ws.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def tickets(ws: Workspace) -> list[TicketSummary]:
    with ws.db.session() as s:
        return list(iter_tickets(s))


def detail(ws: Workspace, ticket_id: int) -> TicketDetail:
    with ws.db.session() as s:
        found = ticket_detail(s, ticket_id)
    assert found is not None, f"no ticket #{ticket_id}"
    return found


def tickets_of(ws: Workspace, message_id: str) -> list[int]:
    """Tickets holding the inbound message with this Message-ID."""
    with ws.db.session() as s:
        return sorted(
            s.scalars(
                select(Message.ticket_id).where(
                    Message.message_id == message_id, Message.direction == Direction.INBOUND
                )
            )
        )


def mailbox_state(ws: Workspace, mailbox: str, folder: str) -> tuple[int, int]:
    with ws.db.session() as s:
        state = s.get(MailboxState, (mailbox, folder))
        assert state is not None, f"no sync state for {mailbox}/{folder}"
        return state.uidvalidity, state.last_uid


def run_deskq(
    config: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DESKQ), "--config", str(config), "poll", "--once"],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


# --------------------------------------------------------------------------- 1. IMAPS


def test_imaps_verified_ingests_and_marks_seen_only_after_commit(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = account()
    ids = [new_id() for _ in range(3)]
    acct.append(*(email(f"Laptop {i} will not boot", message_id=m) for i, m in enumerate(ids)))

    # The system CA store does not know the self-signed cert: a certificate error,
    # reported in the status, and nothing read or marked (verification never disabled).
    for var in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(var, raising=False)
    untrusted = workspaces(config_toml(db_url, acct.mailbox_toml(tls=True, ca_file=False)))
    [status] = poll_once(untrusted)
    assert status.failures == 1
    assert "CERTIFICATE_VERIFY_FAILED" in status.last_error, status.last_error
    assert status.stored == 0 and count(untrusted, RawSource) == 0
    assert len(acct.unseen()) == 3

    # With the server's CA: verified TLS, 3 tickets; \Seen only once the batch is committed.
    ws = workspaces(config_toml(db_url, acct.mailbox_toml(tls=True)))
    observed: list[tuple[str, int, list[int]]] = []
    original = Ingestor.store_batch

    def spy(self: Ingestor, batch: Any, **kw: Any) -> list[Outcome]:
        observed.append(("before commit", count(ws, RawSource), acct.seen()))
        result = original(self, batch, **kw)
        observed.append(("after commit", count(ws, RawSource), acct.seen()))
        return result

    monkeypatch.setattr(Ingestor, "store_batch", spy)
    [status] = poll_ok(ws)
    assert status.stored == 3 and status.duplicates == 0
    assert observed == [("before commit", 0, []), ("after commit", 3, [])]
    assert acct.unseen() == [] and len(acct.seen()) == 3
    found = tickets(ws)
    assert sorted(t.subject for t in found) == [f"Laptop {i} will not boot" for i in range(3)]
    assert {t.queue for t in found} == {"it"}
    assert [len(tickets_of(ws, m)) for m in ids] == [1, 1, 1]

    [again] = poll_ok(ws)
    assert (again.stored, again.duplicates) == (0, 0)
    assert count(ws, RawSource) == 3 and count(ws, Ticket) == 3


# --------------------------------------------------------------------------- 2. after-actions


def test_after_move_creates_the_folder_and_empties_the_inbox(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct = account()
    acct.append(*(email(f"Badge {i} broken") for i in range(3)))
    assert not acct.folder_exists("Processed")
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(after="move:Processed")))

    [status] = poll_ok(ws)
    assert status.stored == 3
    assert acct.count("INBOX") == 0
    assert acct.count("Processed") == 3
    assert count(ws, Ticket) == 3

    [again] = poll_ok(ws)
    assert (again.stored, again.duplicates) == (0, 0)
    assert count(ws, RawSource) == 3


def test_move_without_the_move_extension_never_copies_twice(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without MOVE, move:FOLDER copies and marks (deskq never deletes). Neither a
    connection lost mid-way nor a person marking filed mail unread again (a to-do
    marker) may copy a message a second time."""
    real_capability = IMAPClient.has_capability
    monkeypatch.setattr(
        IMAPClient,
        "has_capability",
        lambda self, cap: cap.upper() != "MOVE" and real_capability(self, cap),
    )
    acct = account()
    acct.append(*(email(f"Keyboard {i} sticky") for i in range(2)))
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(after="move:Processed")))
    real_add_flags = IMAPClient.add_flags
    calls: list[int] = []

    def dropped_once(self: IMAPClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            self.shutdown()
            raise ConnectionResetError("connection lost")
        return real_add_flags(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(IMAPClient, "add_flags", dropped_once)
        (status,) = poll_once(ws)
    assert status.failures == 1 and count(ws, RawSource) == 2
    poll_ok(ws)  # the next connection files them
    assert acct.count("Processed") == 2 and acct.unseen() == []
    for _ in range(3):
        with acct.client() as c:  # a colleague marks the filed mail unread again
            c.select_folder("INBOX")
            c.remove_flags(c.search(["ALL"]), [SEEN], silent=True)
        poll_ok(ws)  # deskq poll --once, from cron: each run a new connection
    assert acct.count("Processed") == 2 and len(acct.unseen()) == 2
    assert count(ws, RawSource) == 2 and count(ws, Ticket) == 2
    # A COPY the server refuses (quota, say) is tried again by the next connection.
    acct.append(email("Screen dim"))
    real_copy = IMAPClient.copy

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise IMAPClientError("COPY command error: NO [OVERQUOTA] Quota exceeded")

    with monkeypatch.context() as m:
        m.setattr(IMAPClient, "copy", refused)
        (status,) = poll_once(ws)
    assert status.failures == 1 and count(ws, RawSource) == 3 and acct.count("Processed") == 2
    poll_ok(ws)
    assert acct.count("Processed") == 3
    # A COPY whose answer never came (a timeout) may have been made: never sent again.
    acct.append(email("Mouse lag"))

    def made_then_cut_off(self: IMAPClient, *args: Any, **kwargs: Any) -> Any:
        real_copy(self, *args, **kwargs)
        raise TimeoutError("timed out")

    with monkeypatch.context() as m:
        m.setattr(IMAPClient, "copy", made_then_cut_off)
        (status,) = poll_once(ws)
    assert status.failures == 1 and acct.count("Processed") == 4
    poll_ok(ws)
    assert acct.count("Processed") == 4


def test_after_none_leaves_flags_untouched(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct = account()
    acct.append(email("Flagged one"), flags=[FLAGGED])
    acct.append(email("Plain one"))
    before = acct.flags()
    assert sorted(before.values(), key=len) == [frozenset(), frozenset({FLAGGED})]
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(after="none")))

    [status] = poll_ok(ws)
    assert status.stored == 2
    assert acct.flags() == before

    [again] = poll_ok(ws)  # unseen on the server, yet known: nothing new
    assert (again.stored, again.duplicates) == (0, 0)
    assert count(ws, RawSource) == 2
    assert acct.flags() == before


# --------------------------------------------------------------------------- 3. exactly once


def test_after_action_lost_in_a_crash_is_finished_by_a_fresh_process(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct = account()
    acct.append(*(email(f"Monitor {i} flickers") for i in range(3)))
    text = config_toml(sqlite_url, acct.mailbox_toml())
    ws = workspaces(text)
    [status] = poll_ok(ws)
    assert status.stored == 3 and acct.unseen() == []

    # A crash after the commit, before the flags: stored in the DB, unseen on the server.
    with acct.client() as c:
        c.select_folder("INBOX")
        c.remove_flags(c.search(["ALL"]), [SEEN], silent=True)
    assert len(acct.unseen()) == 3

    fresh = workspaces(text)  # a new process: new workspace, new source, same database
    source = ImapSource(
        fresh.settings.mailbox[0], fresh.settings, Ingestor(fresh.settings, fresh.db)
    )
    with connected(source):
        outcomes = source.pass_once()
    assert outcomes == []
    assert acct.unseen() == []
    assert count(fresh, RawSource) == 3 and count(fresh, Ticket) == 3 and count(fresh, Message) == 3


@pytest.mark.parametrize("after", ["seen", "move:Processed"])
def test_crash_inside_the_after_action_neither_loses_nor_duplicates(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    after: str,
) -> None:
    acct = account()
    acct.append(*(email(f"Dock {i} dead") for i in range(4)))
    text = config_toml(sqlite_url, acct.mailbox_toml(after=after))
    ws = workspaces(text)

    def crash(self: ImapSource, client: IMAPClient, uids: list[int]) -> None:
        raise RuntimeError("simulated crash between commit and after-action")

    with monkeypatch.context() as m:
        m.setattr(ImapSource, "_after", crash)
        [status] = poll_once(ws)
    assert status.failures == 1 and "simulated crash" in status.last_error
    assert count(ws, RawSource) == 4  # committed before the crash
    assert len(acct.unseen()) == 4 and acct.count("INBOX") == 4  # but not marked

    [status] = poll_ok(workspaces(text))
    assert (status.stored, status.duplicates) == (0, 0)
    assert count(ws, RawSource) == 4 and count(ws, Ticket) == 4
    if after == "seen":
        assert acct.unseen() == []
    else:
        assert acct.count("INBOX") == 0 and acct.count("Processed") == 4


def _source(ws: Workspace) -> ImapSource:
    return ImapSource(ws.settings.mailbox[0], ws.settings, Ingestor(ws.settings, ws.db))


def _two_per_batch(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    url: str,
    subject: str,
    count: int,
) -> tuple[Account, Workspace, ImapSource]:
    """``count`` emails waiting, and a mailbox that fetches and stores them two at a time."""
    acct = account()
    acct.append(*(email(f"{subject} {i}") for i in range(count)))
    ws = workspaces(config_toml(url, acct.mailbox_toml(), batch_size=2))
    return acct, ws, _source(ws)


def test_the_next_fetch_is_in_flight_while_a_batch_is_stored(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server sends batch n+2 while batch n is stored (a remote server's transfer
    overlaps the writing), and after-actions never go out while a FETCH is unanswered."""
    acct, ws, _ = _two_per_batch(account, workspaces, sqlite_url, "Badge broken", 7)
    log_: list[str] = []
    for name in ("send_fetch", "read_fetch"):
        real = getattr(imap_module, name)
        monkeypatch.setattr(
            imap_module, name, lambda *a, _r=real, _n=name: (log_.append(_n), _r(*a))[1]
        )
    real_store, real_after = Ingestor.store_batch, ImapSource._after
    monkeypatch.setattr(
        Ingestor, "store_batch", lambda *a, **k: (log_.append("store"), real_store(*a, **k))[1]
    )
    monkeypatch.setattr(
        ImapSource, "_after", lambda *a: (log_.append("after"), real_after(*a))[1]
    )  # fmt: skip
    [status] = poll_ok(ws)
    assert status.stored == 7 and acct.unseen() == []
    in_flight = 0
    for step in log_:
        in_flight += {"send_fetch": 1, "read_fetch": -1}.get(step, 0)
        if step == "after":
            assert in_flight == 0, log_
    stores = [i for i, step in enumerate(log_) if step == "store"]
    assert len(stores) == 4
    for i in stores[:2]:  # batches 1 and 2 stored while the FETCH of 3 and 4 is out
        assert log_[:i].count("send_fetch") - log_[:i].count("read_fetch") == 1, log_


def test_a_pass_stopped_with_a_fetch_unanswered_drops_the_connection(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    """Stopping never waits for a batch it will not store (a big one can outlast a
    shutdown); the next connection marks what was committed, nothing twice."""
    acct, ws, source = _two_per_batch(account, workspaces, sqlite_url, "Lamp off", 7)
    with connected(source):
        first = source.pass_once(stop=lambda: True)  # stops after the first commit
        assert len(first) == 2 and count(ws, RawSource) == 2
        assert source.client is None  # dropped: the FETCH of batch 3 was unanswered
        assert len(acct.unseen()) == 7  # committed, not marked yet
        rest = source.pass_once()  # reconnects; marks the 2, stores the other 5
    assert len(rest) == 5
    assert count(ws, RawSource) == 7 and count(ws, Ticket) == 7 and acct.unseen() == []


def test_a_pass_stopped_with_nothing_unanswered_marks_and_keeps_the_connection(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct, _, source = _two_per_batch(account, workspaces, sqlite_url, "Fan loud", 3)
    with connected(source):
        client = source.client
        first = source.pass_once(stop=lambda: True)  # the last FETCH was already read
        assert len(first) == 2 and len(acct.unseen()) == 1
        assert source.client is client
        assert not client._imap.untagged_responses.get("FETCH")  # nothing left unread
        client.noop()
        rest = source.pass_once()
    assert len(rest) == 1 and acct.unseen() == []


def test_a_failed_batch_loses_nothing_and_marks_nothing_twice(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct, ws, source = _two_per_batch(account, workspaces, sqlite_url, "Chair squeaks", 7)
    real = Ingestor.store_batch
    calls = []

    def second_fails(self: Ingestor, *a: Any, **k: Any) -> list[Outcome]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure storing the second batch")
        return real(self, *a, **k)

    with connected(source):
        with monkeypatch.context() as m:
            m.setattr(Ingestor, "store_batch", second_fails)
            with pytest.raises(RuntimeError, match="second batch"):
                source.pass_once()
        assert count(ws, RawSource) == 2 and source.client is None
        rest = source.pass_once()
    assert len(rest) == 5
    assert count(ws, RawSource) == 7 and count(ws, Ticket) == 7 and acct.unseen() == []


def test_mail_the_database_cannot_index_is_kept_and_blocks_nothing(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    db_url: str,
) -> None:
    """Content beyond what an index entry or a search vector can hold (PostgreSQL
    reports it as 'program limit exceeded', an OperationalError) is the email's problem,
    not the database's: the email becomes a ticket, the batch around it goes on."""
    rnd = random.Random(1)
    cjk = "".join(chr(rnd.randrange(0x4E00, 0x9FFF)) for _ in range(950))  # ~2,850 bytes
    words = " ".join(f"w{rnd.getrandbits(60):x}" for _ in range(90_000))  # a 1.5 MB subject
    acct = account()
    acct.append(
        email("Before"),
        email("Long Message-ID", message_id=f"<{cjk}@x.example>"),
        email(words),
        email("Long sender", sender=f"{cjk} <{cjk}@x.example>"),
        email("Reply", headers=[f"In-Reply-To: <{cjk}@x.example>"]),
        *(email(f"After {n}") for n in range(3)),
    )
    ws = workspaces(config_toml(db_url, acct.mailbox_toml()))
    (status,) = poll_once(ws)
    assert status.failures == 0, status.last_error
    assert count(ws, RawSource) == 8 and acct.unseen() == []
    with ws.db.session() as s:
        tickets = {t.subject: t for t in s.scalars(select(Ticket))}
    assert "Before" in tickets and all(f"After {n}" in tickets for n in range(3))
    # A 950-character Message-ID is cut (the same way in In-Reply-To: the reply joins).
    assert "Reply" not in tickets and "Long Message-ID" in tickets
    (cut,) = [t for t in tickets if t.startswith("w")]
    assert len(cut) == 2000
    assert "Long sender" in tickets
    if ws.db.is_sqlite:
        return
    # Whatever limit is still reached (here an index someone added on subjects; 1,500
    # CJK characters make a 4,500-byte entry) fails that email alone: it is kept as a
    # parse-error ticket, and the mail around it is stored.
    with ws.db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_added_by_hand ON messages (subject)")
    acct.append(email("Before 2"), email(cjk + cjk[:550]), email("After 2"))
    (status,) = poll_once(ws)
    assert status.failures == 0, status.last_error
    assert count(ws, RawSource) == 11 and acct.unseen() == []
    with ws.db.session() as s:
        flagged = s.scalars(
            select(Ticket.subject).join(TicketFlag).where(TicketFlag.flag == "parse-error")
        ).all()
        subjects = set(s.scalars(select(Ticket.subject)))
    assert flagged == [cjk[:500]] and {"Before 2", "After 2"} <= subjects


def _message_files(maildir: Path) -> list[Path]:
    """Dovecot's files of a Maildir, in UID order (from its dovecot-uidlist)."""
    by_base = {f.name.split(":")[0]: f for sub in ("cur", "new") for f in (maildir / sub).iterdir()}
    ordered = []
    for line in (maildir / "dovecot-uidlist").read_text().splitlines()[1:]:
        uid, _, rest = line.partition(" ")
        base = rest.rsplit(":", 1)[-1] if ":" in rest else rest.split()[-1]
        ordered.append((int(uid), by_base[base.split(":")[0]]))
    return [f for _, f in sorted(ordered)]


@contextlib.contextmanager
def unreadable_on_disk(maildir: Path, message: Path) -> Iterator[None]:
    """``message`` (a file of ``maildir``) unreadable by Dovecot: a disk error, a
    wrong owner. Readable again afterwards, wherever Dovecot moved it meanwhile."""
    os.chmod(message, 0)
    try:
        yield
    finally:
        for path in maildir.glob(f"*/{message.name.split(':')[0]}*"):
            os.chmod(path, 0o600)


@pytest.mark.parametrize("bad", [3, 4, 5])  # first or last of a batch, or alone in one
def test_a_message_the_server_cannot_read_does_not_hold_up_the_others(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
    bad: int,
) -> None:
    """Dovecot answers a FETCH that includes a message file it cannot read with a BYE
    (other servers with a tagged NO): the batch is fetched one by one, the unreadable
    message stays in the folder, unread and logged, a ticket flagged unreadable stands
    in for it, and everything else is stored."""
    acct, ws, _ = _two_per_batch(account, workspaces, sqlite_url, "Monitor flickers", 5)
    acct.count()  # Dovecot has indexed them
    maildir = acct.dovecot.maildir(acct.user)
    files = _message_files(maildir)
    assert len(files) == 5
    with unreadable_on_disk(maildir, files[bad - 1]):
        (status,) = poll_once(ws)
        assert status.failures == 0, status.last_error
        assert count(ws, RawSource) == 5 and acct.unseen() == [bad]
        assert f"cannot return UID {bad}" in caplog.text
        (status,) = poll_once(ws)  # and the next pass goes on from there
        assert status.failures == 0 and count(ws, RawSource) == 5
    with ws.db.session() as s:
        subjects = set(s.scalars(select(Ticket.subject)))
        flagged = s.execute(
            select(Ticket.subject, TicketFlag.detail)
            .join(TicketFlag)
            .where(TicketFlag.flag == "unreadable")
        ).all()
        stand_in = s.scalars(
            select(RawSource).where(RawSource.identity.like("<unreadable.%"))
        ).one()
        text = s.scalars(select(Message.text_body).where(Message.raw_id == stand_in.id)).one()
    stand_in_subject = f"Unreadable message: UID {bad} in INBOX (helpdesk)"
    assert subjects == {f"Monitor flickers {i}" for i in range(5) if i != bad - 1} | {
        stand_in_subject
    }
    assert [subject for subject, _ in flagged] == [stand_in_subject]
    assert "refused to return this email" in flagged[0][1]
    assert f"UID {bad}" in text and "untouched and unread" in text
    # Nothing may mark it later (a restart's after-action recovery reads stored UIDs).
    assert stand_in.uid is None


def test_batches_stay_within_batch_bytes(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sizes of the new messages are asked first (RFC822.SIZE): a batch holds at
    most batch_bytes of email, one larger than that goes alone, whatever batch_size
    says. Mailboxes of scans and photos cannot take gigabytes of memory."""
    acct = account()
    line = "0123456789" * 7 + "\r\n"
    sizes = [300_000] * 3 + [1_500_000] + [300_000] * 4
    acct.multiappend(
        [email(f"Scan {i}", body=line * (size // len(line))) for i, size in enumerate(sizes)]
    )
    limit = 1024 * 1024
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(), batch_bytes=limit))
    batches = record_batch_sizes(monkeypatch)
    [status] = poll_ok(ws)
    assert status.stored == len(sizes) and acct.unseen() == []
    assert [len(b) for b in batches] == [3, 1, 3, 1]  # the large one alone
    assert all(len(b) == 1 or sum(b) <= limit for b in batches), batches


def test_an_email_larger_than_deskq_stores_is_not_fetched_and_a_stand_in_says_so(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over STORE_LIMIT (256 MB; lowered here) an email is never fetched: a ticket
    flagged unreadable says so, the email stays in the folder, untouched and unread,
    and the mail around it (in the same batch) is stored. The next pass goes on."""
    acct = account()
    line = "0123456789" * 7 + "\r\n"
    acct.multiappend(
        [
            email("Toner low"),
            email("Whole film", body=line * 4000),  # about 300 KB
            email("Toner empty"),
        ]
    )
    monkeypatch.setattr(imap_module, "STORE_LIMIT", 200_000)
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
    batches = record_batch_sizes(monkeypatch)
    sized = record_args(monkeypatch, imapwire, "send_fetch", lambda _, uids, __: uids)
    fetched = record_args(monkeypatch, imap_module, "send_fetch", lambda _, uids, __: uids)
    [status] = poll_ok(ws)
    assert status.stored == 3 and acct.unseen() == [2]
    assert (sized, fetched) == (["1:3"], ["1", "3"])  # the sizes; each side of UID 2, never it
    assert len(batches) == 3
    with ws.db.session() as s:
        subjects = set(s.scalars(select(Ticket.subject)))
        (detail,) = s.scalars(select(TicketFlag.detail).where(TicketFlag.flag == "unreadable"))
        stand_in = s.scalars(select(RawSource).where(RawSource.identity.like("<unreadable.%")))
        text = s.scalars(select(Message.text_body).where(Message.raw_id == stand_in.one().id))
        body = text.one()
    assert subjects == {"Toner low", "Toner empty", "Unreadable message: UID 2 in INBOX (helpdesk)"}
    assert "over deskq's limit" in detail and "not fetched" in detail
    assert "more than deskq stores" in body and "untouched and unread" in body
    [again] = poll_ok(ws)
    assert again.stored == 0 and count(ws, RawSource) == 3 and acct.unseen() == [2]


def test_a_server_that_gives_no_sizes_still_has_every_message_stored(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file put into the Maildir by hand, unreadable (its name carries no size):
    Dovecot answers the sizes FETCH with BYE. The pass goes on over a new connection
    with batches bounded by count, and the message gets its stand-in as usual."""
    acct = account()
    acct.append(email("Fan loud 1"), email("Fan loud 2"))
    acct.count()
    maildir = acct.dovecot.maildir(acct.user)
    by_hand = maildir / "new" / f"{int(time.time())}.M1P1.by-hand"
    by_hand.write_bytes(email("Fan loud 3"))
    os.chmod(by_hand, 0)  # a wrong owner, from the start
    try:
        acct.append(email("Fan loud 4"))  # Dovecot gives the file a UID on the way
        ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
        batches = record_batch_sizes(monkeypatch)
        with caplog.at_level(logging.WARNING):
            [status] = poll_ok(ws)
        assert "did not give message sizes" in caplog.text
        [unread] = acct.unseen()
        assert f"cannot return UID {unread}" in caplog.text
        assert status.stored == 4
        assert [len(b) for b in batches] == [4]  # 3 emails and the stand-in
        assert count(ws, RawSource) == 4
    finally:
        for path in maildir.glob("*/*.by-hand*"):
            os.chmod(path, 0o600)


def test_a_second_broken_message_alone_is_skipped_too(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The check that the server still serves asks for messages below the refused one,
    passing over a broken one left by an earlier pass."""
    acct = account()
    acct.append(email("Fine 1"), email("Fine 2"), email("Broken 3"))
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(), batch_size=3))
    acct.count()
    maildir = acct.dovecot.maildir(acct.user)
    with contextlib.ExitStack() as broken:
        for subject in ("Broken 3", "Broken 4"):
            if subject == "Broken 4":
                acct.append(email(subject))
                acct.count()
            broken.enter_context(unreadable_on_disk(maildir, _message_files(maildir)[-1]))
            (status,) = poll_once(ws)
            assert status.failures == 0, status.last_error
        assert count(ws, RawSource) == 4 and acct.unseen() == [3, 4]  # 2 and 2 stand-ins
        assert "cannot return UID 4" in caplog.text


def test_a_broken_message_alone_in_a_folder_move_empties_gets_its_stand_in(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """move:FOLDER empties the folder after every pass, so a broken message arrives
    alone: no other message of the folder can show that the server still serves.
    The latest message of the move target is asked for instead (read-only, on a
    connection of its own); served, the refusal is the message's: a stand-in, and
    the pass succeeds instead of failing until other mail arrives."""
    acct = account()
    acct.append(email("Printer jam 1"))
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(after="move:Processed")))
    poll_ok(ws)
    assert acct.count() == 0 and acct.count("Processed") == 1
    acct.append(email("Printer jam 2"))
    maildir = acct.dovecot.maildir(acct.user)
    acct.count()  # Dovecot has indexed it
    [broken] = _message_files(maildir)
    with unreadable_on_disk(maildir, broken):
        with caplog.at_level(logging.INFO, logger="mail.imap"):
            (status,) = poll_once(ws)
        assert status.failures == 0, status.last_error
        assert "returns mail of folder Processed" in caplog.text
        assert "cannot return UID 2" in caplog.text
        # Untouched: neither moved nor marked; the probe marked nothing either.
        assert acct.unseen() == [2] and acct.unseen("Processed") == [1]
        (again,) = poll_once(ws)  # and the next pass goes on from there
        assert again.failures == 0 and again.stored == 0
        # A second broken one: the folder holds only the first (known broken: it has
        # its stand-in, so it proves nothing); the move target shows the server serves.
        acct.append(email("Printer jam 3"))
        acct.count()
        second = _message_files(maildir)[-1]
        with unreadable_on_disk(maildir, second):
            (status,) = poll_once(ws)
            assert status.failures == 0, status.last_error
            assert acct.unseen() == [2, 3]
    with ws.db.session() as s:
        flagged = s.scalars(
            select(Ticket.subject).join(TicketFlag).where(TicketFlag.flag == "unreadable")
        ).all()
    assert flagged == [f"Unreadable message: UID {uid} in INBOX (helpdesk)" for uid in (2, 3)]
    assert count(ws, RawSource) == 3


def test_a_broken_message_alone_in_the_whole_account_fails_the_pass_until_mail_shows_up(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
) -> None:
    """With no other message anywhere in the account, a refusal cannot be told from a
    server in trouble (throttling, a storage outage): the pass fails, saying why, and
    stores nothing. Once any folder holds a message the server serves, it goes on."""
    acct = account()
    acct.append(email("Badge reader 1"))
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
    maildir = acct.dovecot.maildir(acct.user)
    acct.count()
    [broken] = _message_files(maildir)
    with unreadable_on_disk(maildir, broken):
        (status,) = poll_once(ws)
        assert status.failures == 1
        assert "returned no other message, of this folder or another" in status.last_error
        assert count(ws, RawSource) == 0 and acct.unseen() == [1]
        acct.append(email("Filed by hand"), folder="Archive")  # any other folder will do
        (status,) = poll_once(ws)
        assert status.failures == 0, status.last_error
        assert count(ws, RawSource) == 1 and acct.unseen() == [1]
        assert acct.unseen("Archive") == [1]  # the probe read it with BODY.PEEK


def test_an_after_action_that_fails_is_not_sent_again_in_the_same_pass(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three batches: the after-action of the first fails between two FETCHes.
    _, _, source = _two_per_batch(account, workspaces, sqlite_url, "Plant dry", 5)
    sent: list[list[int]] = []

    def fails(self: ImapSource, client: IMAPClient, uids: list[int]) -> None:
        sent.append(uids)
        raise RuntimeError("simulated failure of the after-action")

    with connected(source), monkeypatch.context() as m:
        m.setattr(ImapSource, "_after", fails)
        with pytest.raises(RuntimeError, match="after-action"):
            source.pass_once()
    assert len(sent) == 1  # once: a COPY without MOVE must not run twice


def test_uidvalidity_reset_is_rescanned_without_duplicates(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct = account()
    folder = "Support"
    old = [email(f"Old request {i}") for i in range(3)]
    acct.append(*old, folder=folder)
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(folder=folder)))
    [status] = poll_ok(ws)
    assert status.stored == 3
    first_validity = acct.uidvalidity(folder)
    assert mailbox_state(ws, "helpdesk", folder) == (first_validity, 3)

    # The folder is recreated (restored from backup, migrated...): new UIDVALIDITY,
    # the same three messages plus one new.
    with acct.client() as c:
        c.delete_folder(folder)
        c.create_folder(folder)
    newcomer_id = new_id()
    acct.append(*old, email("A new request", message_id=newcomer_id), folder=folder)
    second_validity = acct.uidvalidity(folder)
    assert second_validity != first_validity, "Dovecot kept UIDVALIDITY: test precondition"

    [status] = poll_ok(ws)
    assert (status.stored, status.duplicates) == (1, 3)
    assert count(ws, RawSource) == 4 and count(ws, Ticket) == 4
    assert len(tickets_of(ws, newcomer_id)) == 1
    assert mailbox_state(ws, "helpdesk", folder) == (second_validity, 4)
    assert acct.unseen(folder) == []

    [again] = poll_ok(ws)
    assert (again.stored, again.duplicates) == (0, 0)


# ------------------------------------------------------------------ 4. one email, many routes


def test_same_email_in_two_mailboxes_is_stored_once(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], db_url: str
) -> None:
    first, second = account(), account()
    message_id = new_id()
    raw = email("VPN drops every hour", message_id=message_id)
    first.append(
        b"Received: from mx1.corp.example by imap1; " + formatdate().encode() + b"\r\n" + raw
    )
    second.append(
        b"Received: from mx2.corp.example by imap2; " + formatdate().encode() + b"\r\n" + raw
    )
    ws = workspaces(
        config_toml(db_url, first.mailbox_toml("frontdesk"), second.mailbox_toml("backoffice"))
    )

    statuses = poll_ok(ws)  # both mailboxes concurrently, as the poller does
    assert sum(st.stored for st in statuses) == 1
    assert sum(st.duplicates for st in statuses) == 1
    assert count(ws, RawSource) == 1 and count(ws, Ticket) == 1 and count(ws, Message) == 1
    assert len(tickets_of(ws, message_id)) == 1
    assert first.unseen() == [] and second.unseen() == []


def test_a_bcc_to_two_queues_seen_in_two_mailboxes_reaches_both(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each copy names its queue only in its own Delivered-To: the second copy is not
    stored again, but it opens the ticket in its queue, linked to the first one."""
    it_box, hr_box = account(), account()
    raw = email("Payroll access for a new hire", to="staff@corp.example", message_id=new_id())
    it_box.append(b"Delivered-To: it@corp.example\r\n" + raw)
    hr_box.append(b"Delivered-To: hr@corp.example\r\n" + raw)
    # And within one mailbox (one batch): the same email twice, to two queues.
    both = email("Desk and badge for a new hire", to="staff@corp.example", message_id=new_id())
    hr_box.append(
        b"Delivered-To: it@corp.example\r\n" + both,
        b"Delivered-To: hr@corp.example\r\n" + both,
    )
    ws = workspaces(
        config_toml(
            db_url,
            it_box.mailbox_toml("itbox", default_queue="it"),
            hr_box.mailbox_toml("hrbox", default_queue="hr"),
        )
    )
    for _ in range(2):  # and a second pass (or a crash and a rescan) adds nothing
        poll_ok(ws)
        assert count(ws, RawSource) == 2 and count(ws, Ticket) == 4
    by_subject: dict[str, list[TicketSummary]] = {}
    for t in tickets(ws):
        by_subject.setdefault(t.subject, []).append(t)
    assert sorted(t.queue for t in by_subject["Payroll access for a new hire"]) == ["hr", "it"]
    assert sorted(t.queue for t in by_subject["Desk and badge for a new hire"]) == ["hr", "it"]
    for pair in by_subject.values():
        a, b = (detail(ws, t.id) for t in pair)
        assert (b.ticket.id, "same-email") in a.links
    assert it_box.unseen() == [] and hr_box.unseen() == []
    # (On PostgreSQL the two mailboxes race for the first copy: the loser's batch
    # must go through as a batch, not fall back to one message at a time.)
    assert "batch failed" not in caplog.text


def test_a_copy_cut_short_before_its_after_action_gets_it_later(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message recognised as a copy of one stored before has no raw source of its own;
    if the pass dies after the commit, the next connection still marks (or moves) it."""
    a, b = account(), account()
    raw = email("VPN drops", message_id=new_id())
    a.append(raw)
    b.append(raw, *(email(f"Old request {i}") for i in range(2)), folder="Support")
    both = config_toml(sqlite_url, a.mailbox_toml("a"), b.mailbox_toml("b", folder="Support"))
    poll_ok(workspaces(config_toml(sqlite_url, a.mailbox_toml("a"))))

    def killed(self: ImapSource, client: IMAPClient, uids: list[int]) -> None:
        raise RuntimeError("killed between the commit and the after-action")

    with monkeypatch.context() as m:
        m.setattr(ImapSource, "_after", killed)
        statuses = poll_once(workspaces(both))  # b's first message: a copy
    assert [st.failures for st in statuses] == [0, 1]
    assert len(b.unseen("Support")) == 3
    ws = workspaces(both)  # a fresh process
    poll_ok(ws)
    assert b.unseen("Support") == [] and count(ws, RawSource) == 3


def test_mail_to_two_queues_opens_one_linked_ticket_in_each(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct = account()
    acct.append(email("New hire needs a laptop", to="it@corp.example", cc="hr@corp.example"))
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))

    [status] = poll_ok(ws)
    assert status.stored == 1
    by_queue = {t.queue: t.id for t in tickets(ws)}
    assert sorted(by_queue) == ["hr", "it"]
    assert detail(ws, by_queue["it"]).links == ((by_queue["hr"], "same-email"),)
    assert detail(ws, by_queue["hr"]).links == ((by_queue["it"], "same-email"),)
    assert count(ws, RawSource) == 1 and count(ws, Message) == 2


# --------------------------------------------------------------------------- 5. threading


def test_threading_rules(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct = account()
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))

    def deliver(raw: bytes) -> Outcome:
        acct.append(raw)
        [outcome] = outcomes_of(ws)
        return outcome

    first_id = new_id("first")
    first = deliver(email("Printer on fire", message_id=first_id))
    assert first.disposition == "new-ticket"
    [t1] = first.tickets

    # A reply with In-Reply-To joins.
    reply_id = new_id("reply")
    reply = deliver(
        email(
            "Re: Printer on fire",
            message_id=reply_id,
            headers=[f"In-Reply-To: {first_id}", f"References: {first_id}"],
        )
    )
    assert (reply.disposition, reply.tickets) == ("threaded", (t1,))
    assert "In-Reply-To" in detail(ws, t1).messages[-1].threaded_by

    # The subject tag from the requester joins.
    tagged = deliver(email(f"[IT #{t1}] now it smokes"))
    assert (tagged.disposition, tagged.tickets) == ("threaded", (t1,))
    assert "subject tag" in detail(ws, t1).messages[-1].threaded_by

    # The same tag from a stranger opens a new ticket, linked to the first.
    stranger = deliver(email(f"[IT #{t1}] let me in", sender="mallory@elsewhere.example"))
    assert stranger.disposition == "new-ticket"
    [t2] = stranger.tickets
    assert t2 != t1
    assert (t1, "related") in detail(ws, t2).links
    assert (t2, "related") in detail(ws, t1).links

    # A bare "Re: same subject" without threading headers is a new ticket.
    bare = deliver(email("Re: Printer on fire"))
    assert bare.disposition == "new-ticket"
    assert bare.tickets[0] not in (t1, t2)
    assert len(detail(ws, t1).messages) == 3

    # A reply to a resolved ticket reopens it.
    with ws.db.write() as s:
        version = s.get(Ticket, t1).version  # type: ignore[union-attr]
        services.set_status(s, t1, version, None, Status.RESOLVED)
    assert detail(ws, t1).ticket.status == "resolved"
    late = deliver(email("Re: Printer on fire", headers=[f"In-Reply-To: {reply_id}"]))
    assert (late.disposition, late.tickets) == ("threaded", (t1,))
    after = detail(ws, t1)
    assert after.ticket.status == "open"
    assert len(after.messages) == 4
    assert any(
        e.kind == "status" and e.data.get("reason") == "reply after resolution"
        for e in after.events
    )


# --------------------------------------------------------------------------- 6. loops


def _bounce(original_id: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.corp.example>\r\n"
        "To: it-help@corp.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {new_id('bounce')}\r\n"
        f"Date: {formatdate()}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BND"\r\n'
        "\r\n"
        "--BND\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "Your message could not be delivered to gone@corp.example.\r\n"
        "--BND\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.corp.example\r\n"
        "\r\n"
        "Final-Recipient: rfc822; gone@corp.example\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "--BND\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        "From: Alice <alice@corp.example>\r\n"
        "To: it@corp.example, gone@corp.example\r\n"
        "Subject: Projector missing\r\n"
        f"Message-ID: {original_id}\r\n"
        "--BND--\r\n"
    ).encode()


def test_auto_replies_bounces_and_own_mail(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    acct = account()
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(), auto_ack=True))

    original_id = new_id("orig")
    acct.append(email("Projector missing", message_id=original_id, cc="gone@corp.example"))
    [first] = outcomes_of(ws)
    [t1] = first.tickets
    assert count(ws, OutboxItem, OutboxItem.kind == "auto-ack") == 1  # a person: acknowledged

    ooo_id = new_id("ooo")
    with ws.db.session() as session:  # our acknowledgement, coming back (e.g. via a Cc)
        ack = session.scalar(select(OutboxItem.raw))
    assert ack is not None
    acct.append(
        email(
            "Out of office",
            message_id=ooo_id,
            sender="bob@corp.example",
            headers=["Auto-Submitted: auto-replied"],
        ),
        _bounce(original_id),
        ack,
    )
    ooo, bounce, own = outcomes_of(ws)

    # The out-of-office opens a ticket flagged automatic, and gets no acknowledgement.
    assert ooo.disposition == "new-ticket"
    [t_ooo] = ooo.tickets
    assert "automatic" in detail(ws, t_ooo).ticket.flags
    # The bounce names the original's Message-ID in its text/rfc822-headers part: it joins.
    assert (bounce.disposition, bounce.tickets) == ("threaded", (t1,))
    joined = detail(ws, t1)
    assert joined.messages[-1].threaded_by.startswith(f"bounce of {original_id}")
    assert joined.ticket.status == "new"  # a machine's message reopens or changes nothing
    # deskq's own mail makes no ticket.
    assert (own.disposition, own.tickets) == ("own-mail", ())
    assert count(ws, RawSource, RawSource.disposition == "own-mail") == 1

    assert count(ws, Ticket) == 2
    assert count(ws, OutboxItem, OutboxItem.kind == "auto-ack") == 1  # still only the person's
    assert acct.unseen() == []


# --------------------------------------------------------------------------- 7. outage


def watch_idle(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set each time a client's IDLE is acknowledged by the server."""
    idling = threading.Event()
    original = IMAPClient.idle

    def idle_spy(self: IMAPClient) -> Any:
        result = original(self)
        idling.set()
        return result

    monkeypatch.setattr(IMAPClient, "idle", idle_spy)
    return idling


def test_poller_recovers_by_itself_after_dovecot_is_killed(
    dovecot: servers.Dovecot,
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = account()
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
    idling = watch_idle(monkeypatch)
    stop = threading.Event()
    poller = threading.Thread(target=run_forever, args=(ws, stop), name="poller", daemon=True)
    with dovecot_back_up(dovecot):
        poller.start()
        try:
            # Mail is appended while the poller idles (see the race test below for why).
            wait_until(idling.is_set, 10, "the poller to enter IDLE")
            idling.clear()
            before_id = new_id("before")
            acct.append(email("Before the crash", message_id=before_id))
            wait_until(lambda: tickets_of(ws, before_id), 10, "the first ticket")
            wait_until(idling.is_set, 10, "the poller to idle again")

            idling.clear()
            kill_dovecot(dovecot)
            stop.wait(2)  # the outage itself
            dovecot.restart()

            wait_until(idling.is_set, 20, "the poller to reconnect and idle by itself")
            after_id = new_id("after")
            acct.append(email("After the crash", message_id=after_id))
            wait_until(lambda: tickets_of(ws, after_id), 10, "the ticket after the restart")
        finally:
            stop.set()
            poller.join(15)
    assert not poller.is_alive()
    assert count(ws, RawSource) == 2 and count(ws, Ticket) == 2
    assert acct.unseen() == []


def test_mail_arriving_during_a_pass_is_not_left_waiting(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = account()
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(poll_interval=3600)))
    late_id = new_id("late")
    original = Ingestor.store_batch
    appended = threading.Event()

    def store_and_receive_more(self: Ingestor, batch: Any, **kw: Any) -> list[Outcome]:
        if not appended.is_set():  # new mail lands while the first pass is storing
            acct.append(email("Arrived during the pass", message_id=late_id))
            appended.set()
        return original(self, batch, **kw)

    monkeypatch.setattr(Ingestor, "store_batch", store_and_receive_more)
    acct.append(email("Already there"))
    stop = threading.Event()
    poller = threading.Thread(target=run_forever, args=(ws, stop), name="poller", daemon=True)
    poller.start()
    try:
        wait_until(appended.is_set, 10, "the first pass")
        wait_until(lambda: tickets_of(ws, late_id), 5, "the mail that arrived during the pass")
    finally:
        stop.set()
        poller.join(15)
    assert not poller.is_alive()


# --------------------------------------------------------------------------- 8. IDLE


def test_idle_push_latency(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    acct = account()
    # One poll an hour: only IDLE push can explain a ticket within seconds.
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(poll_interval=3600)))
    committed: dict[str, float] = {}
    original_store = Ingestor.store_batch

    def store_spy(self: Ingestor, batch: Any, **kw: Any) -> list[Outcome]:
        result = original_store(self, batch, **kw)
        now = time.monotonic()
        for p in batch:
            committed[p.parsed.message_id] = now
        return result

    monkeypatch.setattr(Ingestor, "store_batch", store_spy)
    idling = watch_idle(monkeypatch)
    stop = threading.Event()
    poller = threading.Thread(target=run_forever, args=(ws, stop), name="poller", daemon=True)
    poller.start()
    delays: list[float] = []
    try:
        for i in range(5):
            wait_until(idling.is_set, 10, "the poller to enter IDLE")
            idling.clear()
            message_id = new_id(f"push{i}")
            started = time.monotonic()
            acct.append(email(f"Pushed {i}", message_id=message_id))
            wait_until(lambda m=message_id: m in committed, 10, f"message {i} to be committed")
            delays.append(committed[message_id] - started)
    finally:
        stop.set()
        poller.join(15)
    assert not poller.is_alive()
    request.node.user_properties.append(("idle_delays_s", [round(d, 3) for d in delays]))
    print(f"IDLE push delays (APPEND -> commit): {', '.join(f'{d:.3f} s' for d in delays)}")
    assert all(d < 5 for d in delays), delays
    assert count(ws, Ticket) == 5


def test_idle_notices_a_dead_server(
    dovecot: servers.Dovecot,
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acct = account()
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(poll_interval=3600)))
    idling = watch_idle(monkeypatch)
    stop = threading.Event()
    worker = MailboxWorker(ws.settings.mailbox[0], ws, stop)
    with dovecot_back_up(dovecot):
        worker.start()
        try:
            wait_until(idling.is_set, 10, "the worker to enter IDLE")
            assert worker.status.failures == 0
            kill_dovecot(dovecot)
            wait_until(lambda: worker.status.failures > 0, 10, "the worker to report the outage")
            assert worker.status.last_error
        finally:
            stop.set()
            dovecot.restart()
            worker.join(15)
    assert not worker.is_alive()


# --------------------------------------------------------------------------- 9. locked database


def test_locked_database_fails_the_pass_and_marks_nothing(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], tmp_path: Path
) -> None:
    acct = account()
    path = tmp_path / "locked.db"
    ws = workspaces(config_toml(f"sqlite:///{path}", acct.mailbox_toml(), busy_timeout_ms=500))
    acct.append(email("Keyboard sticky"), email("Mouse gone"))

    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        [status] = poll_once(ws)
        assert status.failures == 1
        assert "locked" in status.last_error, status.last_error
        assert len(acct.unseen()) == 2  # nothing flagged: nothing was committed
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert count(ws, RawSource) == 0

    [status] = poll_ok(ws)
    assert status.stored == 2
    assert count(ws, Ticket) == 2
    assert acct.unseen() == []


class _ReleaseAfterErrors(logging.Handler):
    """Ends the other writer's transaction once ingestion has logged ``n`` errors."""

    def __init__(self, other: sqlite3.Connection, n: int) -> None:
        super().__init__(logging.ERROR)
        self.other, self.left = other, n

    def emit(self, record: logging.LogRecord) -> None:
        self.left -= 1
        if self.left == 0:
            self.other.execute("ROLLBACK")


def test_a_lock_released_during_the_retries_does_not_brand_mail_as_parse_error(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], tmp_path: Path
) -> None:
    """Regression: the per-message fallback once blamed 'database is locked' on the mail
    and, the lock gone, stored a well-formed message as a parse-error ticket."""
    acct = account()
    path = tmp_path / "locked.db"
    ws = workspaces(config_toml(f"sqlite:///{path}", acct.mailbox_toml(), busy_timeout_ms=300))
    acct.append(email("Keyboard sticky"))

    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    # The other writer ends once ingestion has logged two errors (a failed batch and a
    # failed per-message attempt), or at the latest when the pass is over.
    handler = _ReleaseAfterErrors(other, 2)
    logger = logging.getLogger("mail.ingest")
    logger.addHandler(handler)
    try:
        poll_once(ws)  # may fail: the database was locked
    finally:
        logger.removeHandler(handler)
        with contextlib.suppress(sqlite3.OperationalError):
            other.execute("ROLLBACK")
        other.close()
    poll_ok(ws)
    assert count(ws, RawSource) == 1 and count(ws, Ticket) == 1
    with ws.db.session() as s:
        flags = s.execute(select(TicketFlag.flag, TicketFlag.detail)).all()
    assert flags == [], "a locked database was blamed on a well-formed message"


# --------------------------------------------------------------------------- 10. SIGKILL faults


def start_deskq(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``deskq poll --once`` in its own session (so its leftovers can be found)."""
    return subprocess.Popen(
        [str(DESKQ), "--config", str(config), "poll", "--once"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def fault_setup(
    account: Callable[[], Account], tmp_path: Path, total: int
) -> tuple[Account, Path, Path, dict[str, str]]:
    acct = account()
    acct.multiappend(
        [
            email(f"Fault {i}", message_id=f"<fault-{i}@corp.example>", body=f"request {i}\n")
            for i in range(total)
        ]
    )
    config, db_path = tmp_path / "config.toml", tmp_path / "deskq.db"
    config.write_text(
        # Small batches: more commits, so more kills land between a commit and its flags.
        config_toml(f"sqlite:///{db_path}", acct.mailbox_toml(after="seen"), batch_size=20)
    )
    env = {**os.environ, acct.env: acct.password}
    env.pop("DESKQ_CONFIG", None)
    return acct, config, db_path, env


def stored_count(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM raw_sources").fetchone()[0])
        except sqlite3.OperationalError:  # killed before the schema was created
            return 0


def test_sigkilled_deskq_poll_stores_everything_exactly_once(
    account: Callable[[], Account], tmp_path: Path
) -> None:
    total = 2000
    acct, config, db_path, env = fault_setup(account, tmp_path, total)

    rng = random.Random(20240611)
    killed = interrupted = 0  # interrupted: kills that hit while messages were still missing
    for _ in range(20):
        proc = start_deskq(config, env)
        try:
            proc.wait(timeout=rng.uniform(0.05, 1.5))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # the fault: the main process only
            proc.wait()
            killed += 1
            interrupted += stored_count(db_path) < total
        finally:
            kill_group(proc.pid)
    print(f"fault test: {killed} of 20 runs SIGKILLed, {interrupted} before all were stored")
    # Later rounds kill runs that only finish after-actions or find nothing new; at least
    # one kill must have hit a run that was still storing, or the test tested nothing.
    assert interrupted >= 1, "no kill interrupted an unfinished ingest: use more messages"

    final = run_deskq(config, env)
    assert final.returncode == 0, final.stderr

    with contextlib.closing(sqlite3.connect(db_path)) as db:
        raw = db.execute("SELECT count(*) FROM raw_sources").fetchone()[0]
        inbound = db.execute(
            "SELECT count(*) FROM messages WHERE direction = 'inbound'"
        ).fetchone()[0]
        distinct = db.execute(
            "SELECT count(DISTINCT message_id) FROM messages WHERE direction = 'inbound'"
        ).fetchone()[0]
        repeated = db.execute(
            "SELECT message_id, count(*) FROM messages WHERE direction = 'inbound' "
            "GROUP BY message_id HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        state = db.execute("SELECT last_uid FROM mailbox_state").fetchall()
    assert (raw, inbound, distinct) == (total, total, total)
    assert repeated == []
    assert state == [(total,)]
    assert acct.unseen() == []
    assert len(acct.seen()) == total


POOL_USER = """
import time
from mail.prepare import Incoming
from mail.pipeline import prepared_batches

raw = b"From: a@corp.example\\r\\nSubject: x\\r\\nMessage-ID: <x@corp.example>\\r\\n\\r\\nhi\\r\\n"
batches = [[Incoming(raw=raw, mailbox="m", uid=i) for i in range(200)] for _ in range(2)]
for prepared in prepared_batches(batches, 1 << 20):
    assert len(prepared) == 200
print("ready", flush=True)
time.sleep(120)
"""


def test_sigkilled_ingest_leaves_no_orphan_parse_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``deskq poll`` does with a backlog (batches parsed in the pool), then SIGKILL.

    Regression: the spawned pool worker and the multiprocessing resource tracker used
    to outlive a SIGKILLed parent, orphaned forever.
    """
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux /proc to list a process group")
    monkeypatch.delenv("DESKQ_NO_PARSE_POOL", raising=False)
    proc = subprocess.Popen(
        [sys.executable, "-c", POOL_USER], stdout=subprocess.PIPE, start_new_session=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while process_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = process_group(proc.pid)
        assert leftovers == [], f"outlived the killed parent: {[cmdline(p) for p in leftovers]}"
    finally:
        kill_group(proc.pid)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_clean_backlog_is_ingested_without_warnings(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backlog in batches of 200 (parsed in worker processes, if any): no worker crash.

    Regression: INTERNALDATE with imapclient's unpicklable FixedOffset tzinfo killed
    every pooled parse worker ("parse worker died; parsing this batch in-process").
    """
    monkeypatch.delenv("DESKQ_NO_PARSE_POOL", raising=False)
    acct = account()
    acct.multiappend([email(f"Backlog {i}") for i in range(600)])
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(), batch_size=200))
    with caplog.at_level(logging.WARNING):
        [status] = poll_ok(ws)
    assert status.stored == 600
    assert acct.unseen() == []
    problems = [
        f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING
    ]
    assert problems == [], "well-formed mail produced warnings"


# --------------------------------------------------------------------------- 11. exit code


def test_poll_once_exit_code(account: Callable[[], Account], tmp_path: Path) -> None:
    good, other = account(), account()
    config = tmp_path / "config.toml"
    config.write_text(
        config_toml(
            f"sqlite:///{tmp_path / 'deskq.db'}",
            good.mailbox_toml("good"),
            other.mailbox_toml("other"),
        )
    )
    env = {**os.environ, good.env: good.password, other.env: other.password}
    env.pop("DESKQ_CONFIG", None)
    good.append(email("First for good"))
    other.append(email("First for other"))

    fine = run_deskq(config, env)
    assert fine.returncode == 0, fine.stderr
    assert "mailbox good: 1 stored" in fine.stderr and "mailbox other: 1 stored" in fine.stderr

    good.append(email("Second for good"))
    other.append(email("Second for other"))
    broken = run_deskq(config, {**env, other.env: "wrong-password"})
    assert broken.returncode == 1, broken.stderr
    assert "mailbox other: FAILED" in broken.stderr
    assert "mailbox good: 1 stored" in broken.stderr
    assert "wrong-password" not in broken.stderr
    assert good.unseen() == [] and len(other.unseen()) == 1

    with contextlib.closing(sqlite3.connect(tmp_path / "deskq.db")) as db:
        subjects = sorted(r[0] for r in db.execute("SELECT subject FROM tickets"))
    assert subjects == ["First for good", "First for other", "Second for good"]


# --------------------------------------------------------------------------- 12. corpus


def test_real_world_corpus_is_ingested(
    account: Callable[[], Account], workspaces: Callable[[str], Workspace], sqlite_url: str
) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"mail corpus not found at {CORPUS} (CI has it; set DESKQ_CORPUS_DIR)")
    files = sorted(CORPUS.glob("*.eml"))
    assert files, f"no .eml files in {CORPUS}"
    acct = account()
    acct.append(*(f.read_bytes() for f in files))
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))

    outcomes = outcomes_of(ws)
    assert len(outcomes) == len(files)
    by_file = {f.name: o.disposition for f, o in zip(files, outcomes, strict=True)}
    assert set(by_file.values()) <= {"new-ticket", "threaded"}, by_file
    assert all(o.tickets for o in outcomes)
    assert count(ws, RawSource) == len(files)
    assert count(ws, Message, Message.raw_id.is_not(None)) >= len(files)
    with ws.db.session() as s:
        orphans = s.scalars(
            select(RawSource.id).where(~RawSource.id.in_(select(Message.raw_id)))
        ).all()
    assert orphans == []
    assert acct.unseen() == []


# ------------------------------------------------------------- connections opened early


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[IMAPClient]]:
    """Every IMAP connection deskq opens from now on (early or not), in order; any
    early connection left over is discarded at the end."""
    clients: list[IMAPClient] = []
    real = imapconn.open_connection

    def recording(m: MailboxSettings) -> IMAPClient:
        client = real(m)
        clients.append(client)
        return client

    monkeypatch.setattr(imapconn, "open_connection", recording)
    yield clients
    imapconn.discard_early()


def logged_out(client: IMAPClient) -> bool:
    return bool(client._imap.state == "LOGOUT")


def test_the_first_pass_takes_the_connection_opened_early(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
) -> None:
    """``deskq poll`` connects (TLS, login, SELECT) while it loads the database layer;
    the first pass goes on that connection instead of opening another."""
    acct = account()
    acct.append(email("Dock flickers 1"), email("Dock flickers 2"))
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(tls=True)))
    imapconn.open_early(ws.settings.mailbox)
    [status] = poll_ok(ws)
    assert status.stored == 2 and acct.unseen() == []
    assert len(opened) == 1  # the early one, used and closed by the pass
    [status] = poll_ok(ws)  # later passes connect as usual
    assert status.stored == 0 and len(opened) == 2


def test_an_early_connection_that_failed_fails_the_pass_with_its_own_error(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The error is the one connecting in the pass gives (login refused, with the
    mailbox and server named), raised by the pass, and the login is not tried twice."""
    acct = account()
    monkeypatch.setenv(acct.env, "not the password")
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
    logins = record_args(monkeypatch, IMAPClient, "login", lambda _, username, __: username)
    imapconn.open_early(ws.settings.mailbox)
    [status] = poll_once(ws)
    assert status.failures == 1
    assert f"mailbox 'helpdesk': login as {acct.user} refused by 127.0.0.1" in status.last_error
    assert logins == [acct.user]


def test_early_connections_nothing_takes_are_closed(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
) -> None:
    """A mailbox another poller works (or a command that fails before its pass)
    leaves its early connection untaken: it is logged out, not left to time out."""
    acct = account()
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
    imapconn.open_early(ws.settings.mailbox)
    wait_until(lambda: opened, 5, "the early connection")
    imapconn.discard_early()
    wait_until(lambda: logged_out(opened[0]), 5, "the early connection to be logged out")


def test_an_early_connection_is_taken_only_for_the_same_settings_and_while_fresh(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opened for other settings of a mailbox of the same name (another folder), it
    is not used; opened longer ago than EARLY_MAX_AGE (the server may have dropped
    it), it is logged out and the pass connects anew."""
    acct = account()
    acct.append(email("Kettle 1"))
    acct.append(email("Kettle 2"), folder="Facilities")
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
    other = workspaces(config_toml(sqlite_url, acct.mailbox_toml(folder="Facilities")))
    imapconn.open_early(other.settings.mailbox)
    wait_until(lambda: opened, 5, "the early connection")
    [status] = poll_ok(ws)
    assert status.stored == 1 and acct.unseen() == [] and acct.unseen("Facilities") == [1]
    assert len(opened) == 2 and not logged_out(opened[0])
    monkeypatch.setattr(imapconn, "EARLY_MAX_AGE", 0.0)
    [status] = poll_ok(other)
    assert status.stored == 1 and acct.unseen("Facilities") == []
    assert len(opened) == 3 and logged_out(opened[0])


def test_an_early_connection_nothing_takes_in_time_is_logged_out_by_itself(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `deskq poll` that runs for days while another poller works the mailbox never
    takes its early connection: it is logged out after EARLY_MAX_AGE, not held open
    until the server drops it."""
    monkeypatch.setattr(imapconn, "EARLY_MAX_AGE", 0.3)
    acct = account()
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml()))
    imapconn.open_early(ws.settings.mailbox)
    wait_until(lambda: opened, 5, "the early connection")
    wait_until(lambda: logged_out(opened[0]), 5, "the early connection to be logged out")
    poll_ok(ws)  # the pass connects anew
    assert len(opened) == 2


def _start_early(ws: Workspace) -> None:
    """What ``deskq poll`` does while it starts: each IMAP mailbox connected in a
    thread, which then begins the mailbox's first pass (imapwire.prefetch)."""
    imapconn.open_early(ws.settings.mailbox, functools.partial(imapwire.prefetch, ws.settings))


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The UID sets of every FETCH from now on: sent by the early start, by the pass."""
    monkeypatch.setattr(pipeline, "POOL_THRESHOLD", 2)  # (early starts need a batch this big)
    seen: dict[str, list[str]] = {"early": [], "pass": []}

    def pick(_: IMAPClient, uids: str, __: str) -> None:
        early = threading.current_thread().name.startswith("connect-")
        seen["early" if early else "pass"].append(uids)

    record_args(monkeypatch, imapwire, "send_fetch", pick)  # (sizes; the early start's)
    record_args(monkeypatch, imap_module, "send_fetch", pick)  # (the pass's batches)
    return seen


def test_the_first_pass_goes_on_from_its_early_start(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
    fetches: dict[str, list[str]],
) -> None:
    """While ``deskq poll`` starts, each mailbox's first pass is begun: SEARCH, sizes,
    the first batch fetched and handed to the parse worker. The pass goes on from
    there, asking the server for none of it again, with every message stored once."""
    acct = account()
    acct.multiappend([email(f"Projector {n}") for n in range(1, 8)])
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(), batch_size=3))
    _start_early(ws)
    [status] = poll_ok(ws)
    assert fetches == {"early": ["1:7", "1,2,3"], "pass": ["4,5,6", "7"]}
    assert status.stored == 7 and count(ws, RawSource) == 7 and acct.unseen() == []
    assert len(opened) == 1
    with ws.db.session() as s:
        subjects = sorted(s.scalars(select(Ticket.subject)))
    assert subjects == [f"Projector {n}" for n in range(1, 8)]


def test_an_early_start_from_another_sync_state_is_not_used(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
    fetches: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The early start reads the sync state without the database layer; if the pass
    reads another (a poller elsewhere stored mail meanwhile), it starts afresh on the
    same connection: nothing stored twice, nothing missed."""
    acct = account()
    acct.multiappend([email(f"Blinds {n}") for n in range(1, 3)])
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(), batch_size=3))
    poll_ok(ws)
    acct.multiappend([email(f"Blinds {n}") for n in range(3, 8)])
    monkeypatch.setattr(peek, "sync_state", lambda *_: (None, 0))  # as read before that pass
    del fetches["early"][:], fetches["pass"][:]
    _start_early(ws)
    [status] = poll_ok(ws)
    assert fetches == {"early": ["1:7", "1,2,3"], "pass": ["3:7", "3,4,5", "6,7"]}
    assert status.stored == 5 and count(ws, RawSource) == 7 and acct.unseen() == []
    assert len(opened) == 2  # the first pass's, and the early one, taken


def test_an_early_start_the_server_refuses_leaves_the_pass_to_meet_it(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    opened: list[IMAPClient],
    fetches: dict[str, list[str]],
) -> None:
    """A message the server cannot read in the first batch ends the early start's
    connection (Dovecot answers BYE): it is closed, and the pass connects anew and
    handles the message its usual way (a stand-in ticket, the rest stored)."""
    acct = account()
    acct.multiappend([email(f"Heating {n}") for n in range(1, 6)])
    ws = workspaces(config_toml(sqlite_url, acct.mailbox_toml(), batch_size=3))
    acct.count()  # Dovecot has indexed them
    maildir = acct.dovecot.maildir(acct.user)
    with unreadable_on_disk(maildir, _message_files(maildir)[1]):
        _start_early(ws)
        poll_ok(ws)
        assert fetches["early"] == ["1:5", "1,2,3"]
        assert fetches["pass"][:2] == ["1:5", "1,2,3"]  # all asked for again
        assert len(opened) >= 2 and logged_out(opened[0])
        assert count(ws, RawSource) == 5 and acct.unseen() == [2]
    with ws.db.session() as s:
        flagged = s.scalars(select(TicketFlag.flag).where(TicketFlag.flag == "unreadable"))
        assert list(flagged) == ["unreadable"]
