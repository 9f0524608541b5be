"""Ingestion through a real Maildir into real databases: exactly once, after-actions,
routing, threading, loop guards, quarantine, oversize and broken mail, attachments.

Each test writes .eml files into ``new/`` of a Maildir in tmp_path and runs the
product's own source (:class:`mail.maildir.MaildirSource`) or the poller; the key
tests run on SQLite and on PostgreSQL (``db_url``).
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from mail import prepare as preparing
from mail.ingest import Ingestor, Outcome
from mail.maildir import MaildirSource
from mail.parse import ParsedMessage, content_identity, parse
from mail.poller import poll_once
from store import codec, services
from store.config import Settings, parse_settings
from store.db import make_engine
from store.models import (
    Attachment,
    Base,
    Blob,
    Direction,
    Event,
    MailboxState,
    Message,
    OutboxItem,
    Person,
    Queue,
    RawSource,
    Status,
    Ticket,
    TicketFlag,
    TicketLink,
)
from store.views import search_ticket_ids, ticket_detail
from store.workspace import Workspace, open_workspace
from tests import servers
from tests.conftest import TEMPLATE_DB
from tests.support import CORPUS, record_batch_sizes

PROVIDER = "alice@corp.example"

CONFIG = """
me = "{me}"

[database]
url = "{url}"

[[mailbox]]
name = "helpdesk"
source = "maildir"
path = "{maildir}"
after = "{after}"
{mailbox_extra}

[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
aliases = ["it@corp.example"]
auto_ack = {auto_ack}
{it_extra}

[[queue]]
key = "hr"
name = "HR"
tag = "HR"
address = "hr@corp.example"
{hr_extra}

[ingest]
max_message_bytes = {max_bytes}
batch_size = {batch_size}
batch_bytes = {batch_bytes}
"""


class Desk:
    """A workspace reading one Maildir, with helpers to drop mail and look at the result."""

    def __init__(self, url: str, root: Path, **options: Any) -> None:
        self.maildir = root / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        values = {
            "me": PROVIDER,
            "url": url,
            "maildir": self.maildir,
            "after": "seen",
            "mailbox_extra": "",
            "auto_ack": "false",
            "it_extra": "",
            "hr_extra": "",
            "max_bytes": 25 * 1024 * 1024,
            "batch_size": 200,
            "batch_bytes": 32 * 1024 * 1024,
            **options,
        }
        self.settings: Settings = parse_settings(CONFIG.format(**values))
        self.ws: Workspace = open_workspace(self.settings)
        self.count_files = 0
        self.clock = time.time() - 3000  # every drop is older than the previous poll

    # ---------------------------------------------------------------- mail in

    def drop(self, raw: bytes, name: str | None = None, mtime: float | None = None) -> Path:
        """Deliver ``raw`` into new/ like an MTA (mtime = delivery time, increasing)."""
        self.count_files += 1
        path = self.maildir / "new" / (name or f"{1700000000 + self.count_files}.M1P1.host")
        path.write_bytes(raw)
        self.clock += 1
        when = self.clock if mtime is None else mtime
        os.utime(path, (when, when))
        return path

    def poll(self) -> list[Outcome]:
        source = MaildirSource(
            self.settings.mailbox[0], self.settings, Ingestor(self.settings, self.ws.db)
        )
        return source.pass_once()

    def deliver(self, raw: bytes, **kw: Any) -> Outcome:
        self.drop(raw, **kw)
        (outcome,) = self.poll()
        return outcome

    # ---------------------------------------------------------------- looking

    def count(self, model: Any) -> int:
        with self.ws.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)

    def ticket(self, tid: int) -> Ticket:
        with self.ws.db.session() as s:
            ticket = s.get(Ticket, tid)
            assert ticket is not None
            return ticket

    def queue_of(self, tid: int) -> str:
        with self.ws.db.session() as s:
            return str(
                s.scalar(
                    select(Queue.key)
                    .join(Ticket, Ticket.queue_id == Queue.id)
                    .where(Ticket.id == tid)
                )
            )

    def events(self, tid: int) -> list[tuple[str, dict[str, Any]]]:
        with self.ws.db.session() as s:
            rows = s.execute(
                select(Event.kind, Event.data).where(Event.ticket_id == tid).order_by(Event.id)
            )
            return [(k, d) for k, d in rows]

    def kinds(self, tid: int) -> list[str]:
        return [k for k, _ in self.events(tid)]

    def flags(self, tid: int) -> set[str]:
        with self.ws.db.session() as s:
            return set(s.scalars(select(TicketFlag.flag).where(TicketFlag.ticket_id == tid)))

    def links(self, tid: int) -> set[tuple[int, str]]:
        with self.ws.db.session() as s:
            rows = s.execute(
                select(TicketLink.other_id, TicketLink.kind).where(TicketLink.ticket_id == tid)
            )
            return {(o, k) for o, k in rows}

    def messages(self, tid: int) -> list[Message]:
        with self.ws.db.session() as s:
            return list(
                s.scalars(select(Message).where(Message.ticket_id == tid).order_by(Message.id))
            )

    def outbox(self) -> list[OutboxItem]:
        with self.ws.db.session() as s:
            return list(s.scalars(select(OutboxItem).order_by(OutboxItem.id)))

    def raws(self) -> list[RawSource]:
        with self.ws.db.session() as s:
            return list(s.scalars(select(RawSource).order_by(RawSource.id)))

    def files(self, folder: str = "cur", root: Path | None = None) -> list[str]:
        return sorted(os.listdir((root or self.maildir) / folder))

    def act(self, fn: Callable[..., Any], tid: int, *args: Any) -> Any:
        """Run a triage service as the provider on the ticket's current version."""
        with self.ws.db.write() as s:
            actor = services.get_or_create_person(s, PROVIDER, provider=True)
            ticket = s.get(Ticket, tid)
            assert ticket is not None
            return fn(s, tid, ticket.version, actor, *args)


@pytest.fixture(scope="module")
def pg_ingest(pg_cluster: servers.PostgresCluster) -> Iterator[tuple[str, Engine]]:
    """One PostgreSQL database for this module, emptied before each test (a fresh
    database per test costs a checkpoint each)."""
    name = f"ingest_{os.getpid()}"
    pg_cluster.create_database(name, template=TEMPLATE_DB)
    engine = make_engine(pg_cluster.url(name))
    yield pg_cluster.url(name), engine
    engine.dispose()
    pg_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Overrides conftest's db_url: SQLite, and PostgreSQL through pg_ingest."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    url, engine = request.getfixturevalue("pg_ingest")
    with engine.begin() as conn:
        # replica role: skip the append-only trigger on events (and FK checks) while emptying
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        for table in reversed(Base.metadata.sorted_tables):
            conn.exec_driver_sql(f'DELETE FROM "{table.name}"')
    return str(url)


@pytest.fixture
def make_desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Desk]]:
    # Parse in-process, so monkeypatched parsing applies and no worker is spawned.
    monkeypatch.setenv("DESKQ_NO_PARSE_POOL", "1")
    desks: list[Desk] = []

    def make(url: str, **options: Any) -> Desk:
        desk = Desk(url, tmp_path / f"desk{len(desks)}", **options)
        desks.append(desk)
        return desk

    yield make
    for desk in desks:
        desk.ws.close()


@pytest.fixture
def desk(make_desk: Callable[..., Desk], db_url: str) -> Desk:
    """IT acknowledges new tickets; on SQLite and PostgreSQL."""
    return make_desk(db_url, auto_ack="true")


@pytest.fixture
def lite(make_desk: Callable[..., Desk], sqlite_url: str) -> Desk:
    """The same on SQLite only (Maildir mechanics do not depend on the database)."""
    return make_desk(sqlite_url, auto_ack="true")


_ids = iter(range(1, 1_000_000))


def email(
    subject: str = "Printer broken",
    frm: str | None = "Bob Example <bob@corp.example>",
    to: str | None = "it@corp.example",
    msgid: str | None = "",
    body: str = "The printer on floor 3 prints empty pages.\n",
    headers: tuple[str, ...] = (),
    date: str = "Mon, 02 Jan 2023 10:00:00 +0000",
) -> bytes:
    """A plain email; ``msgid=""`` gives a fresh Message-ID, None none at all."""
    lines = list(headers)
    if frm is not None:
        lines.append(f"From: {frm}")
    if to is not None:
        lines.append(f"To: {to}")
    lines.append(f"Subject: {subject}")
    lines.append(f"Date: {date}")
    if msgid == "":
        msgid = f"<req{next(_ids)}.{time.time_ns()}@corp.example>"
    if msgid is not None:
        lines.append(f"Message-ID: {msgid}")
    lines.append("Content-Type: text/plain; charset=utf-8")
    return ("\n".join(lines) + "\n\n" + body).encode()


def msgid_of(raw: bytes) -> str:
    mid = parse(raw).message_id
    assert mid is not None
    return mid


# --------------------------------------------------------------------------- Maildir


def test_files_move_to_cur_only_after_commit(
    make_desk: Callable[..., Desk], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = make_desk(sqlite_url, batch_size=2)
    raws = [email(), email(subject="Scanner"), email(subject="Re: Printer broken")]
    paths = [desk.drop(raw) for raw in raws]
    committed: list[tuple[str, int]] = []
    original = MaildirSource._after

    def spy(self: MaildirSource, path: Path) -> str:
        # a separate connection sees only what was committed
        committed.append((path.name, desk.count(RawSource)))
        return original(self, path)

    monkeypatch.setattr(MaildirSource, "_after", spy)
    outcomes = desk.poll()
    assert [o.disposition for o in outcomes] == ["new-ticket"] * 3
    # batch by batch: each file is marked once its own batch is committed
    assert committed == [(paths[0].name, 2), (paths[1].name, 2), (paths[2].name, 3)]
    assert desk.files("new") == []
    assert desk.files("cur") == sorted(f"{p.name}:2,S" for p in paths)


def test_a_failing_batch_leaves_its_files_and_later_ones_in_new(
    make_desk: Callable[..., Desk], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = make_desk(sqlite_url, batch_size=2)
    paths = [desk.drop(email(subject=f"Request {n}")) for n in range(5)]
    calls = []
    original = Ingestor.store_batch

    def second_fails(self: Ingestor, *args: Any, **kwargs: Any) -> list[Outcome]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ingestor, "store_batch", second_fails)
    with pytest.raises(RuntimeError):
        desk.poll()
    assert desk.files("cur") == sorted(f"{p.name}:2,S" for p in paths[:2])
    assert desk.files("new") == sorted(p.name for p in paths[2:])
    assert desk.count(RawSource) == 2
    monkeypatch.undo()
    # No pass has finished yet, so cur/ is read whole (it might hold mail put there by
    # mbsync or a mail client): the two stored files are recognised, not stored again.
    assert sorted(o.disposition for o in desk.poll()) == ["duplicate"] * 2 + ["new-ticket"] * 3
    assert desk.files("new") == []
    assert desk.count(RawSource) == desk.count(Ticket) == 5


def _refuse_reads(monkeypatch: pytest.MonkeyPatch, error: OSError) -> set[str]:
    """Reading a file whose name is in the returned set raises ``error`` (simulated:
    chmod 000 does not stop root, who runs CI)."""
    refused: set[str] = set()
    read_bytes = Path.read_bytes

    def refuse(path: Path) -> bytes:
        if path.name in refused:
            raise type(error)(error.errno, error.strerror, str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    return refused


def _unreadable_in_cur(desk: Desk, refused: set[str]) -> None:
    """Mail delivered straight into cur/ that cannot be read: one poll stores only its
    stand-in, and the clock moves on past it."""
    in_cur = desk.maildir / "cur" / "1700009999.M1P1.host:2,S"
    in_cur.write_bytes(email(subject="Read on the server already"))
    refused.add(in_cur.name)
    assert [o.disposition for o in desk.poll()] == ["parse-error"]  # its stand-in
    time.sleep(0.1)


def _stand_ins(desk: Desk) -> list[tuple[str, str, str]]:
    """(subject, flag detail, text) of each ticket flagged unreadable."""
    with desk.ws.db.session() as s:
        rows = s.execute(
            select(Ticket.subject, TicketFlag.detail, Message.text_body)
            .join(TicketFlag, TicketFlag.ticket_id == Ticket.id)
            .join(Message, Message.ticket_id == Ticket.id)
            .where(TicketFlag.flag == "unreadable")
            .order_by(Ticket.id)
        ).all()
    return [(subject, detail, text) for subject, detail, text in rows]


def test_an_unreadable_file_does_not_hold_up_the_others(
    make_desk: Callable[..., Desk],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = make_desk(sqlite_url, batch_size=2)
    good = [desk.drop(email(subject=f"Request {n}")) for n in range(3)]
    bad = desk.drop(email(subject="Unreadable"))
    odd = desk.drop(email(subject="Delivered in the year 33658"))
    os.utime(odd, ns=(10**21, 10**21))
    refused = _refuse_reads(monkeypatch, PermissionError(13, "Permission denied"))
    refused.add(bad.name)
    outcomes = desk.poll()
    # (the unreadable file's place in its batch holds a stand-in, flagged unreadable)
    assert [o.disposition for o in outcomes] == ["new-ticket"] * 3 + ["parse-error", "new-ticket"]
    assert desk.files("new") == [bad.name]  # left in place, tried again next pass
    assert desk.files("cur") == sorted(f"{p.name}:2,S" for p in [*good, odd])
    assert f"cannot read {bad}" in caplog.text
    [(subject, detail, text)] = _stand_ins(desk)
    assert subject == f"Unreadable message: file {bad.name} in mailbox helpdesk"
    assert detail == f"reading the file failed: [Errno 13] Permission denied: '{bad}'"
    assert "deskq could not read this email" in text and f"file {bad.name} (in new/" in text
    assert "tries it again on every pass" in text
    later = desk.drop(email(subject="Later"))
    assert [o.disposition for o in desk.poll()] == ["new-ticket"]  # one stand-in only
    assert desk.files("new") == [bad.name] and f"{later.name}:2,S" in desk.files("cur")
    # Mail delivered straight into cur/ (mbsync) that cannot be read is tried again by
    # name (remembered in the database: each poll here is a new source, as with
    # `deskq poll --once` from cron), while the watermark moves on: the files after it
    # are not read again and again.
    _unreadable_in_cur(desk, refused)
    desk.drop(email(subject="Meanwhile"))
    assert [o.disposition for o in desk.poll()] == ["new-ticket"]
    assert desk.poll() == []  # nothing read twice
    monkeypatch.undo()  # readable again: stored by the next pass
    assert sorted(o.disposition for o in desk.poll()) == ["new-ticket"] * 2
    assert desk.files("new") == [] and desk.count(RawSource) == 10  # 2 stand-ins
    assert len(_stand_ins(desk)) == 2
    assert desk.poll() == []
    with desk.ws.db.session() as s:  # nothing owed any more
        folders = set(s.scalars(select(MailboxState.folder)))
    assert folders == {"maildir:cur"}


def test_a_file_larger_than_deskq_stores_is_left_in_place_unread(
    make_desk: Callable[..., Desk],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import mail.maildir as maildir_module

    monkeypatch.setattr(maildir_module, "STORE_LIMIT", 100_000)
    desk = make_desk(sqlite_url)
    first = desk.drop(email(subject="Toner low"))
    huge = desk.drop(email(subject="Whole film", body="0123456789\n" * 20_000))
    reads = _count_reads(monkeypatch)
    outcomes = desk.poll()
    assert [o.disposition for o in outcomes] == ["new-ticket", "parse-error"]  # a stand-in
    assert huge.name not in reads  # never read into memory
    assert desk.files("new") == [huge.name] and desk.files("cur") == [f"{first.name}:2,S"]
    assert "more than deskq stores" in caplog.text
    [(subject, detail, text)] = _stand_ins(desk)
    assert subject == f"Unreadable message: file {huge.name} in mailbox helpdesk"
    assert detail == f"{huge.stat().st_size:,} bytes, over deskq's limit of 100,000: not read"
    assert "more than deskq stores" in text and "forward what matters" in text
    later = desk.drop(email(subject="Toner empty"))
    assert [o.disposition for o in desk.poll()] == ["new-ticket"]  # the rest goes on
    assert desk.files("new") == [huge.name] and f"{later.name}:2,S" in desk.files("cur")
    assert len(_stand_ins(desk)) == 1


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files read from now on (Path.read_bytes)."""
    names: list[str] = []
    real = Path.read_bytes

    def reading(path: Path) -> bytes:
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", reading)
    return names


def test_a_file_owed_from_an_earlier_pass_survives_a_stopped_pass(
    make_desk: Callable[..., Desk], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = make_desk(sqlite_url, batch_size=1)
    # An I/O error: unlike a chmod fix, its end does not change the file's ctime.
    refused = _refuse_reads(monkeypatch, OSError(5, "Input/output error"))
    _unreadable_in_cur(desk, refused)
    desk.drop(email(subject="A"))
    desk.drop(email(subject="B"))
    refused.clear()
    source = MaildirSource(
        desk.settings.mailbox[0], desk.settings, Ingestor(desk.settings, desk.ws.db)
    )
    assert len(source.pass_once(stop=lambda: True)) == 1  # a shutdown after one batch
    for _ in range(2):
        desk.poll()
        time.sleep(0.1)
    with desk.ws.db.session() as s:
        subjects = set(s.scalars(select(Ticket.subject)))
        folders = set(s.scalars(select(MailboxState.folder)))
    assert subjects - {"A", "B", "Read on the server already"} == {
        "Unreadable message: file 1700009999.M1P1.host in mailbox helpdesk"
    }
    assert folders == {"maildir:cur"}


def _stand_in_of(desk: Desk, name: str) -> int:
    """The ticket standing in for the file ``name``."""
    with desk.ws.db.session() as s:
        tid = s.scalar(
            select(Ticket.id).where(Ticket.subject.startswith(f"Unreadable message: file {name} "))
        )
    assert tid is not None
    return int(tid)


def _status_events(desk: Desk, tid: int) -> list[dict[str, Any]]:
    return [data for kind, data in desk.events(tid) if kind == "status"]


def test_a_stand_in_is_resolved_when_its_email_is_read_at_last(
    make_desk: Callable[..., Desk], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the file a stand-in stood for is stored, the stand-in's work is done: its
    ticket is linked to where the email went and resolved, in the same transaction."""
    desk = make_desk(db_url)
    refused = _refuse_reads(monkeypatch, PermissionError(13, "Permission denied"))
    plain = desk.drop(email(subject="VPN down"))
    claimed = desk.drop(email(subject="Laptop stolen"))
    handled = desk.drop(email(subject="Badge lost"))
    copy = email(subject="Printer jam")
    again = desk.drop(copy)
    refused.update(p.name for p in (plain, claimed, handled, again))
    assert [o.disposition for o in desk.poll()] == ["parse-error"] * 4  # four stand-ins
    stand_ins = {p: _stand_in_of(desk, p.name) for p in (plain, claimed, handled, again)}
    # Providers act on two of them meanwhile; the fourth file's email arrives in
    # another file too, readable (an MTA delivering it twice): stored from that one.
    desk.act(services.claim, stand_ins[claimed])
    desk.act(services.set_status, stand_ins[handled], Status.RESOLVED)
    desk.drop(copy)
    (first_copy,) = desk.poll()
    assert first_copy.disposition == "new-ticket"
    assert desk.poll() == []  # nothing read twice, no second stand-in
    refused.clear()  # readable again
    outcomes = {o.tickets: o.disposition for o in desk.poll()}
    assert sorted(outcomes.values()) == ["duplicate", "new-ticket", "new-ticket", "new-ticket"]
    with desk.ws.db.session() as s:
        read_as = {
            p: s.scalar(select(Ticket.id).where(Ticket.subject == subject))
            for p, subject in (
                (plain, "VPN down"),
                (claimed, "Laptop stolen"),
                (handled, "Badge lost"),
                (again, "Printer jam"),
            )
        }
    assert read_as[again] == first_copy.tickets[0]  # the duplicate: where its copy went
    for path, stand_in in stand_ins.items():
        tid = read_as[path]
        assert desk.links(stand_in) == {(tid, "stand-in")}
        assert desk.links(tid) == {(stand_in, "stand-in")}
        assert ("link", {"other": stand_in, "kind": "stand-in"}) in desk.events(tid)
        assert "unreadable" in desk.flags(stand_in) and "unreadable" not in desk.flags(tid)
    for path in (plain, claimed, again):
        assert desk.ticket(stand_ins[path]).status == Status.RESOLVED
        assert _status_events(desk, stand_ins[path])[-1] == {
            "from": "new" if path is not claimed else "open",
            "to": "resolved",
            "reason": f"its email was read: #{read_as[path]}",
        }
    assert desk.ticket(stand_ins[claimed]).assignee_id is not None  # kept: only resolved
    # Resolved by a provider already: linked, its history otherwise left alone.
    assert len(_status_events(desk, stand_ins[handled])) == 1
    assert desk.poll() == []
    assert desk.files("new") == []


def test_a_stand_in_that_holds_other_mail_is_only_linked(
    make_desk: Callable[..., Desk], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider merged a stand-in into a real conversation: when its email is read,
    that conversation is linked to it, not resolved."""
    desk = make_desk(sqlite_url)
    refused = _refuse_reads(monkeypatch, PermissionError(13, "Permission denied"))
    conversation = desk.deliver(email(subject="Monitor flickers")).tickets[0]
    bad = desk.drop(email(subject="Monitor flickers, photo attached"))
    refused.add(bad.name)
    desk.poll()
    stand_in = _stand_in_of(desk, bad.name)
    with desk.ws.db.write() as s:
        actor = services.get_or_create_person(s, PROVIDER, provider=True)
        versions = {t.id: t.version for t in s.scalars(select(Ticket))}
        services.merge(s, stand_in, versions[stand_in], conversation, versions[conversation], actor)
    refused.clear()
    (outcome,) = desk.poll()
    assert outcome.disposition == "new-ticket"
    (read_as,) = outcome.tickets
    assert (read_as, "stand-in") in desk.links(conversation)
    assert desk.ticket(conversation).status == Status.NEW
    assert _status_events(desk, conversation) == []


def test_mail_put_in_cur_is_read_whatever_this_machines_clock_says(
    make_desk: Callable[..., Desk],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Files in cur/ are read when their ctime is past a watermark. On NFS or SMB the
    ctime comes from the file server's clock: the watermark is taken from that clock
    too, not from this machine's (here 1 s ahead)."""
    import mail.maildir as maildir_module

    desk = make_desk(sqlite_url)
    real_ns = time.time_ns
    ahead = SimpleNamespace(time_ns=lambda: real_ns() + 1_000_000_000, sleep=time.sleep)
    monkeypatch.setattr(maildir_module, "time", ahead)
    desk.drop(email(subject="First"))
    assert len(desk.poll()) == 1
    synced = desk.maildir / "cur" / "1700000100.M1P1.host:2,S"
    synced.write_bytes(email(subject="Read on the phone, synced by mbsync"))
    assert [o.disposition for o in desk.poll()] == ["new-ticket"]
    assert desk.poll() == []  # and read once
    # The file server's clock went back an hour: cur/ is read whole once, nothing lost.
    source = MaildirSource(
        desk.settings.mailbox[0], desk.settings, Ingestor(desk.settings, desk.ws.db)
    )
    source._set_watermark(real_ns() + 3_600_000_000_000)
    later = desk.maildir / "cur" / "1700000200.M1P1.host:2,S"
    later.write_bytes(email(subject="Synced after the clock went back"))
    assert sorted(o.disposition for o in source.pass_once()) == ["duplicate"] * 2 + ["new-ticket"]
    assert "went back" in caplog.text


def test_replies_thread_across_batches(make_desk: Callable[..., Desk], sqlite_url: str) -> None:
    desk = make_desk(sqlite_url, batch_size=1)
    first = email()
    desk.drop(first)
    desk.drop(email(subject="Re: x", headers=(f"In-Reply-To: {msgid_of(first)}",)))
    one, two = desk.poll()
    assert (one.disposition, two.disposition) == ("new-ticket", "threaded")
    assert one.tickets == two.tickets


def test_batches_stay_within_batch_bytes(
    make_desk: Callable[..., Desk], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emails with large attachments: a batch holds at most batch_bytes of them (one
    larger than that goes alone), so memory stays bounded whatever batch_size says."""
    limit = 1024 * 1024
    desk = make_desk(sqlite_url, batch_bytes=limit)
    line = "0123456789" * 7 + "\n"
    sizes = [300_000] * 3 + [1_500_000] + [300_000] * 4
    for i, size in enumerate(sizes):
        desk.drop(email(subject=f"Scan {i}", body=line * (size // len(line))))
    batches = record_batch_sizes(monkeypatch)
    outcomes = desk.poll()
    assert [o.disposition for o in outcomes] == ["new-ticket"] * len(sizes)
    assert desk.count(RawSource) == len(sizes) and len(desk.files("new")) == 0
    assert [len(b) for b in batches] == [3, 1, 3, 1]  # the large one alone
    assert all(len(b) == 1 or sum(b) <= limit for b in batches), batches


@pytest.mark.parametrize(
    ("after", "folder", "flags"),
    [
        ("seen", "", "S"),
        ("none", "", ""),
        ("move:Done", ".Done", "S"),
        ("move:Archive/2024", ".Archive.2024", "S"),
    ],
)
def test_after_actions(
    make_desk: Callable[..., Desk], sqlite_url: str, after: str, folder: str, flags: str
) -> None:
    desk = make_desk(sqlite_url, after=after)
    path = desk.drop(email())
    assert [o.disposition for o in desk.poll()] == ["new-ticket"]
    root = desk.maildir / folder if folder else desk.maildir
    assert desk.files("new") == []
    assert desk.files("cur", root) == [f"{path.name}:2,{flags}"]
    if folder:
        assert desk.files("cur") == []
        assert (root / "new").is_dir() and (root / "tmp").is_dir()
    # nothing is ever deleted or changed: the file is the stored raw source
    kept = (root / "cur" / f"{path.name}:2,{flags}").read_bytes()
    assert desk.raws()[0].content() == kept


def test_same_email_twice_is_stored_once(desk: Desk) -> None:
    raw = email()
    desk.drop(raw, name="copy-a")
    desk.drop(raw, name="copy-b")
    outcomes = desk.poll()
    assert [o.disposition for o in outcomes] == ["new-ticket", "duplicate"]
    assert desk.count(RawSource) == desk.count(Ticket) == 1
    assert desk.count(Message) == 2  # the request and its acknowledgement
    assert desk.files("cur") == ["copy-a:2,S", "copy-b:2,S"]
    (tid,) = outcomes[0].tickets
    # the same email again, via IMAP-style CRLF and another delivery path
    relayed = (
        b"Return-Path: <bob@corp.example>\nDelivered-To: it-help@corp.example\n"
        b"Received: from mx2.corp.example by mail.corp.example;\n\tMon, 2 Jan 2023 10:00:05 +0000\n"
        + raw
    ).replace(b"\n", b"\r\n")
    again = desk.deliver(relayed)
    assert again.disposition == "duplicate"
    assert again.tickets == (tid,)
    assert desk.count(RawSource) == desk.count(Ticket) == 1
    assert len(desk.outbox()) == 1


def test_crash_between_commit_and_move_stores_nothing_twice(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = desk.drop(email())

    def crash(self: MaildirSource, path: Path) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(MaildirSource, "_after", crash)
    with pytest.raises(OSError):
        desk.poll()
    assert desk.files("new") == [path.name]
    assert desk.count(RawSource) == desk.count(Ticket) == 1
    monkeypatch.undo()
    (outcome,) = desk.poll()
    assert outcome.disposition == "duplicate"
    assert desk.count(RawSource) == desk.count(Ticket) == 1
    assert desk.files("new") == []
    assert desk.files("cur") == [f"{path.name}:2,S"]


def test_a_copy_read_again_after_a_merge_across_queues_opens_nothing(desk: Desk) -> None:
    """Copies are delivered by the queues the email reached when it came, not by where
    its messages are now: merged into another queue's ticket, a re-read copy (a second
    mailbox, a rescan) opens no ticket and sends no second acknowledgement."""
    raw = email(subject="Laptop broken")  # to it@
    (it_ticket,) = desk.deliver(raw).tickets
    (hr_ticket,) = desk.deliver(email(subject="Leave", to="hr@corp.example")).tickets
    with desk.ws.db.write() as s:
        actor = services.get_or_create_person(s, PROVIDER, provider=True)
        source, target = s.get(Ticket, it_ticket), s.get(Ticket, hr_ticket)
        assert source is not None and target is not None
        services.merge(s, it_ticket, source.version, hr_ticket, target.version, actor)
    tickets, sent = desk.count(Ticket), len(desk.outbox())
    assert desk.deliver(raw).disposition == "duplicate"
    assert desk.count(Ticket) == tickets and len(desk.outbox()) == sent


@pytest.mark.postgres
def test_two_pollers_with_copies_for_one_queue_open_one_ticket(
    make_desk: Callable[..., Desk], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes store a copy naming the same new queue at once: the email's raw
    source row is locked while one decides, so the other finds the queue reached."""
    import threading

    import mail.batch as batch_module
    from mail.prepare import Incoming, prepare

    desk = make_desk(pg_url)
    body = email(subject="Payroll access", to="staff@corp.example")
    assert desk.deliver(b"Delivered-To: it@corp.example\n" + body).disposition == "new-ticket"
    copy = b"Delivered-To: hr@corp.example\n" + body
    holding, go = threading.Event(), threading.Event()
    real_write = batch_module.Batch._write

    def slow_write(self: Any) -> None:
        real_write(self)
        if threading.current_thread().name == "first":
            holding.set()  # written, not committed yet
            go.wait(10)

    monkeypatch.setattr(batch_module.Batch, "_write", slow_write)
    results: dict[str, list[Outcome]] = {}

    def store(name: str) -> None:
        item = prepare(Incoming(raw=copy, mailbox=name), 10**7)
        results[name] = Ingestor(desk.settings, desk.ws.db).store_batch(
            [item], mailbox=name, default_queue="it"
        )

    first = threading.Thread(target=store, args=("first",), name="first")
    first.start()
    assert holding.wait(10)
    second = threading.Thread(target=store, args=("second",), name="second")
    second.start()
    time.sleep(0.5)  # the second waits for the first's lock
    go.set()
    first.join(10)
    second.join(10)
    assert sorted(o.disposition for r in results.values() for o in r) == ["duplicate", "new-ticket"]
    with desk.ws.db.session() as s:
        queues = s.scalars(select(Queue.key).join(Ticket, Ticket.queue_id == Queue.id)).all()
    assert sorted(queues) == ["hr", "it"]


@pytest.mark.postgres
def test_pollers_with_copies_in_opposite_order_do_not_deadlock(
    make_desk: Callable[..., Desk], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies of the same stored emails in opposite orders (two mailboxes, a rescan
    next to live mail): raw sources are locked in one order, before any ticket."""
    import threading

    import mail.batch as batch_module
    from mail.prepare import Incoming, prepare

    desk = make_desk(pg_url)
    one, two = email(subject="One"), email(subject="Two")
    assert desk.deliver(one).disposition == desk.deliver(two).disposition == "new-ticket"
    first = {"A": threading.Event(), "B": threading.Event()}
    real = batch_module.Batch._deliver_copy

    def deliver_copy(self: Any, p: Any, raw_id: int, arrived: datetime) -> bool:
        result = real(self, p, raw_id, arrived)
        me = threading.current_thread().name
        if not first[me].is_set():  # each holds what it locked and waits for the other
            first[me].set()
            first["B" if me == "A" else "A"].wait(2)
        return result

    monkeypatch.setattr(batch_module.Batch, "_deliver_copy", deliver_copy)
    errors: dict[str, BaseException] = {}

    def run(name: str, raws: list[bytes]) -> None:
        try:
            items = [prepare(Incoming(raw=r, mailbox=name), 10**7) for r in raws]
            out = Ingestor(desk.settings, desk.ws.db).store_batch(
                items, mailbox=name, default_queue="it"
            )
            assert [o.disposition for o in out] == ["duplicate"] * 2
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors[name] = exc

    threads = [
        threading.Thread(target=run, args=("A", [one, two]), name="A"),
        threading.Thread(target=run, args=("B", [two, one]), name="B"),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, {k: f"{type(v).__name__}: {v}"[:300] for k, v in errors.items()}


def test_a_devices_repeated_alert_without_message_id_or_date_is_kept(desk: Desk) -> None:
    """Printers and UPSes send alerts with neither Message-ID nor Date: only where the
    email entered the mail system (the first Received) tells one week's from the next;
    a copy through a second alias carries the same first Received."""

    def alert(entered: str, *top: str) -> bytes:
        return (
            "\n".join(
                [
                    *top,
                    f"Received: from printer.lan by mx.corp.example; {entered}",
                    "From: printer@corp.example",
                    "To: it@corp.example",
                    "Subject: Toner low on PRN-3F",
                    "",
                    "Toner cartridge black is low.",
                ]
            )
            + "\n"
        ).encode()

    first = desk.deliver(alert("Mon, 2 Nov 2026 09:00:00 +0000"))
    again = desk.deliver(alert("Mon, 9 Nov 2026 09:00:00 +0000"))
    copy = desk.deliver(
        alert(
            "Mon, 9 Nov 2026 09:00:00 +0000",
            "Delivered-To: it@corp.example",
            "Received: from mx.corp.example by imap2.corp.example; Mon, 9 Nov 2026 09:00:01",
        )
    )
    assert [first.disposition, again.disposition, copy.disposition] == [
        "new-ticket",
        "new-ticket",
        "duplicate",
    ]
    # Stored by a deskq before this rule (under the identity it had then), the same
    # alert read again (a rescan) is still recognised.
    old = alert("Mon, 16 Nov 2026 09:00:00 +0000")
    assert desk.deliver(old).disposition == "new-ticket"
    legacy = content_identity(old, None, first_received=False)
    with desk.ws.db.write() as s:  # (and compressed with zlib, as deskq then did)
        s.execute(
            text(
                "UPDATE raw_sources SET identity = :old, compression = 'zlib', data = :data "
                "WHERE identity = :new"
            ),
            {"old": legacy, "new": content_identity(old, None), "data": zlib.compress(old)},
        )
    assert desk.deliver(old).disposition == "duplicate"
    # ...while the next identical alert, whose old identity is the same, is new.
    assert desk.deliver(alert("Mon, 23 Nov 2026 09:00:00 +0000")).disposition == "new-ticket"


def test_different_emails_sharing_a_message_id_are_both_kept(desk: Desk) -> None:
    one = desk.deliver(email(msgid="<same@corp.example>", body="first\n"))
    two = desk.deliver(email(msgid="<same@corp.example>", body="second, different\n"))
    assert (one.disposition, two.disposition) == ("new-ticket", "new-ticket")
    assert desk.count(RawSource) == 2


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("headers", "to", "expected"),
    [
        (("Delivered-To: hr@corp.example",), "someone@else.example", ["hr"]),
        (("X-Original-To: hr@corp.example",), "nobody@corp.example", ["hr"]),
        (("Cc: Human Resources <HR@Corp.Example>",), "Nobody <nobody@corp.example>", ["hr"]),
        ((), "IT-Help@Corp.Example", ["it"]),
        (("Delivered-To: hr@corp.example",), "it@corp.example", ["hr", "it"]),
        (("X-Original-To: it@corp.example", "Delivered-To: hr@corp.example"), None, ["hr", "it"]),
        (("Cc: it@corp.example",), "hr@corp.example", ["hr", "it"]),
    ],
)
def test_routing_by_recipient_headers_in_trust_order(
    lite: Desk, headers: tuple[str, ...], to: str | None, expected: list[str]
) -> None:
    outcome = lite.deliver(email(headers=headers, to=to))
    assert outcome.disposition == "new-ticket"
    assert [lite.queue_of(t) for t in outcome.tickets] == expected


@pytest.mark.parametrize(
    ("mailbox_extra", "expected"), [('default_queue = "hr"', "hr"), ("", "it")]
)
def test_unknown_recipient_goes_to_the_default_queue(
    make_desk: Callable[..., Desk], sqlite_url: str, mailbox_extra: str, expected: str
) -> None:
    desk = make_desk(sqlite_url, mailbox_extra=mailbox_extra)
    outcome = desk.deliver(email(to="someone@corp.example"))
    assert [desk.queue_of(t) for t in outcome.tickets] == [expected]


def test_one_email_to_two_queues_gives_two_linked_tickets(desk: Desk) -> None:
    raw = email(
        to="it@corp.example, IT Help <it-help@corp.example>",
        headers=("Cc: hr@corp.example", "Delivered-To: it@corp.example"),
    )
    outcome = desk.deliver(raw)
    assert len(outcome.tickets) == 2
    it, hr = outcome.tickets
    assert (desk.queue_of(it), desk.queue_of(hr)) == ("it", "hr")
    assert desk.count(Ticket) == 2
    assert desk.links(it) == {(hr, "same-email")}
    assert desk.links(hr) == {(it, "same-email")}
    assert "link" in desk.kinds(it) and "link" in desk.kinds(hr)
    # the copy delivered for the other alias is the same email
    copy = raw.replace(b"Delivered-To: it@corp.example", b"Delivered-To: hr@corp.example")
    assert desk.deliver(copy).disposition == "duplicate"
    assert desk.count(Ticket) == 2


def test_history_of_each_linked_ticket_starts_with_created(desk: Desk) -> None:
    outcome = desk.deliver(email(to="it@corp.example, hr@corp.example"))
    for tid in outcome.tickets:
        assert desk.kinds(tid)[:2] == ["created", "message"], (tid, desk.kinds(tid))


def test_different_headerless_files_are_both_kept(lite: Desk) -> None:
    lite.drop(b"garbage written by a broken fetcher")
    lite.drop(b"\xff\xfe completely different garbage")
    outcomes = lite.poll()
    assert [o.disposition for o in outcomes].count("duplicate") == 0
    assert lite.count(RawSource) == 2


# --------------------------------------------------------------------------- threading


def _first(desk: Desk, **kw: Any) -> tuple[int, bytes]:
    raw = email(**kw)
    outcome = desk.deliver(raw)
    assert outcome.disposition == "new-ticket"
    (tid,) = outcome.tickets
    return tid, raw


def test_reply_with_in_reply_to_joins(desk: Desk) -> None:
    tid, raw = _first(desk)
    reply = email(subject="Re: Printer broken", headers=(f"In-Reply-To: {msgid_of(raw)}",))
    outcome = desk.deliver(reply)
    assert (outcome.disposition, outcome.tickets) == ("threaded", (tid,))
    inbound = [m for m in desk.messages(tid) if m.direction == Direction.INBOUND]
    assert len(inbound) == 2
    assert inbound[1].threaded_by == f"In-Reply-To {msgid_of(raw)}"
    assert [k for k in desk.kinds(tid) if k != "auto-ack"] == ["created", "message", "message"]
    assert desk.count(Ticket) == 1
    assert len(desk.outbox()) == 1  # only the new ticket was acknowledged


def test_reply_with_references_joins(desk: Desk) -> None:
    tid, raw = _first(desk)
    reply = email(
        subject="Re: something else",
        headers=(
            "In-Reply-To: <unknown@elsewhere.example>",
            f"References: {msgid_of(raw)} <unknown@elsewhere.example>",
        ),
    )
    outcome = desk.deliver(reply)
    assert (outcome.disposition, outcome.tickets) == ("threaded", (tid,))
    assert desk.messages(tid)[-1].threaded_by.startswith("References ")


@pytest.mark.parametrize(
    "sender", ["Bob Example <bob@corp.example>", "carol@corp.example", f"Alice <{PROVIDER}>"]
)
def test_subject_tag_from_a_participant_joins(desk: Desk, sender: str) -> None:
    tid, _ = _first(desk, headers=("Cc: carol@corp.example",))
    outcome = desk.deliver(email(subject=f"Re: [IT #{tid}] Printer broken", frm=sender))
    assert (outcome.disposition, outcome.tickets) == ("threaded", (tid,))
    assert "subject tag" in desk.messages(tid)[-1].threaded_by


def test_subject_tag_from_a_stranger_opens_a_linked_ticket(desk: Desk) -> None:
    tid, _ = _first(desk)
    outcome = desk.deliver(
        email(subject=f"[IT #{tid}] please add me too", frm="mallory@elsewhere.example")
    )
    assert outcome.disposition == "new-ticket"
    (new,) = outcome.tickets
    assert new != tid
    assert desk.links(new) == {(tid, "related")}
    assert desk.links(tid) == {(new, "related")}
    assert "not a participant" in desk.messages(new)[0].threaded_by
    assert len([m for m in desk.messages(tid) if m.direction == Direction.INBOUND]) == 1


def test_subject_tag_of_another_queue_does_not_join(desk: Desk) -> None:
    tid, _ = _first(desk)
    outcome = desk.deliver(email(subject=f"Re: [IT #{tid}] Printer broken", to="hr@corp.example"))
    assert outcome.disposition == "new-ticket"
    assert desk.queue_of(outcome.tickets[0]) == "hr"


@pytest.mark.parametrize("subject", ["Printer broken", "Re: Printer broken", "RE: Printer broken"])
def test_bare_subject_never_threads(lite: Desk, subject: str) -> None:
    tid, _ = _first(lite)
    outcome = lite.deliver(email(subject=subject))
    assert outcome.disposition == "new-ticket"
    assert outcome.tickets != (tid,)
    assert lite.count(Ticket) == 2


def test_reply_to_a_resolved_ticket_reopens_it(desk: Desk) -> None:
    tid, raw = _first(desk)
    desk.act(services.set_status, tid, Status.RESOLVED)
    assert desk.ticket(tid).resolved_at is not None
    outcome = desk.deliver(email(subject="Re: x", headers=(f"In-Reply-To: {msgid_of(raw)}",)))
    assert outcome.tickets == (tid,)
    ticket = desk.ticket(tid)
    assert ticket.status == Status.OPEN
    assert ticket.resolved_at is None
    kind, data = desk.events(tid)[-1]
    assert kind == "status"
    assert (data["from"], data["to"]) == ("resolved", "open")
    assert desk.kinds(tid)[-2] == "message"


@pytest.mark.parametrize(
    ("frm", "headers"),
    [(f"Alice <{PROVIDER}>", ()), ("Bob <bob@corp.example>", ("Auto-Submitted: auto-replied",))],
)
def test_provider_or_automatic_reply_does_not_reopen(
    desk: Desk, frm: str, headers: tuple[str, ...]
) -> None:
    tid, raw = _first(desk)
    desk.act(services.set_status, tid, Status.RESOLVED)
    reply = email(subject="Re: x", frm=frm, headers=(*headers, f"In-Reply-To: {msgid_of(raw)}"))
    assert desk.deliver(reply).tickets == (tid,)
    assert desk.ticket(tid).status == Status.RESOLVED
    assert desk.kinds(tid)[-1] == "message"


def test_reply_to_a_closed_ticket_opens_a_linked_follow_up(desk: Desk) -> None:
    tid, raw = _first(desk)
    desk.act(services.set_status, tid, Status.CLOSED)
    outcome = desk.deliver(email(subject="Re: x", headers=(f"In-Reply-To: {msgid_of(raw)}",)))
    assert outcome.disposition == "new-ticket"
    (new,) = outcome.tickets
    assert new != tid
    assert desk.ticket(tid).status == Status.CLOSED
    assert desk.ticket(new).status == Status.NEW
    assert desk.links(new) == {(tid, "related")}
    assert "closed" in desk.messages(new)[0].threaded_by


def test_reply_to_a_merged_ticket_lands_in_the_merge_target(desk: Desk) -> None:
    source, raw = _first(desk)
    target, _ = _first(desk, subject="Printer still broken")
    with desk.ws.db.write() as s:
        actor = services.get_or_create_person(s, PROVIDER, provider=True)
        versions = {t.id: t.version for t in s.scalars(select(Ticket))}
        services.merge(s, source, versions[source], target, versions[target], actor)
    by_header = desk.deliver(email(subject="Re: x", headers=(f"In-Reply-To: {msgid_of(raw)}",)))
    assert by_header.tickets == (target,)
    by_tag = desk.deliver(email(subject=f"Re: [IT #{source}] Printer broken"))
    assert by_tag.tickets == (target,)
    assert f"merged into #{target}" in desk.messages(target)[-1].threaded_by
    assert desk.count(Ticket) == 2


def test_reply_in_the_same_batch_threads(desk: Desk) -> None:
    raw = email()
    desk.drop(raw)
    desk.drop(email(subject="Re: Printer broken", headers=(f"In-Reply-To: {msgid_of(raw)}",)))
    first, second = desk.poll()
    assert (first.disposition, second.disposition) == ("new-ticket", "threaded")
    assert first.tickets == second.tickets


# --------------------------------------------------------------------------- loops


def test_new_ticket_gets_exactly_one_acknowledgement(desk: Desk) -> None:
    raw = email()
    (tid,) = desk.deliver(raw).tickets
    (item,) = desk.outbox()
    assert item.kind == "auto-ack"
    assert item.ticket_id == tid
    assert item.to_addr == "bob@corp.example"
    assert item.mail_from == "it-help@corp.example"
    assert b"Auto-Submitted: auto-replied" in item.raw
    assert f"X-Deskq-Ticket: {tid}".encode() in item.raw
    ack = parse(item.raw)
    assert ack.subject.startswith(f"[IT #{tid}]")
    assert ack.in_reply_to == (msgid_of(raw),)
    assert ack.message_id == item.message_id
    (outbound,) = [m for m in desk.messages(tid) if m.direction == Direction.OUTBOUND]
    assert outbound.message_id == item.message_id
    assert outbound.id == item.message_row_id
    assert outbound.in_reply_to == msgid_of(raw)
    assert "auto-ack" in desk.kinds(tid)
    # a queue without auto_ack stays silent
    desk.deliver(email(to="hr@corp.example"))
    assert len(desk.outbox()) == 1


DSR = b"""From: Mail Delivery System <MAILER-DAEMON@mx.corp.example>
To: it-help@corp.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsr.{n}@mx.corp.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.corp.example
Final-Recipient: rfc822;bob@elsewhere.example
Action: failed
Status: 5.1.1

--B
Content-Type: text/rfc822-headers

From: IT Help <it-help@corp.example>
To: bob@elsewhere.example
Subject: [IT #1] Re: printer
Message-ID: {original}

--B--
"""


def dsr(original: str) -> bytes:
    return DSR.replace(b"{original}", original.encode()).replace(b"{n}", str(next(_ids)).encode())


@pytest.mark.parametrize(
    ("raw", "flag"),
    [
        (email(headers=("Auto-Submitted: auto-replied",)), "automatic"),
        (email(headers=("Precedence: bulk",)), "automatic"),
        (email(headers=("List-Id: Staff <staff.corp.example>",)), "automatic"),
        (email(headers=("Return-Path: <>",)), "automatic"),
        (email(frm="MAILER-DAEMON@mx.corp.example"), "bounce"),
        (dsr("<unknown@corp.example>"), "bounce"),
        (email(frm=None), "automatic"),
    ],
    ids=[
        "auto-submitted",
        "precedence",
        "list-id",
        "empty-return-path",
        "mailer-daemon",
        "dsr",
        "no-sender",
    ],
)
def test_automatic_mail_opens_a_flagged_ticket_without_acknowledgement(
    desk: Desk, raw: bytes, flag: str
) -> None:
    outcome = desk.deliver(raw)
    assert outcome.disposition == "new-ticket"
    (tid,) = outcome.tickets
    assert flag in desk.flags(tid)
    assert desk.outbox() == []
    assert "auto-ack" not in desk.kinds(tid)


def test_reply_to_our_acknowledgement_joins(desk: Desk) -> None:
    (tid,) = desk.deliver(email()).tickets
    ack = parse(desk.outbox()[0].raw)
    reply = email(
        subject=f"Re: {ack.subject}",
        to="IT Help <it-help@corp.example>",
        headers=(f"In-Reply-To: {ack.message_id}",),
    )
    outcome = desk.deliver(reply)
    assert (outcome.disposition, outcome.tickets) == ("threaded", (tid,))
    assert len(desk.outbox()) == 1


def test_bounce_of_our_acknowledgement_joins_its_ticket(desk: Desk) -> None:
    (tid,) = desk.deliver(email()).tickets
    (item,) = desk.outbox()
    outcome = desk.deliver(dsr(item.message_id))
    assert (outcome.disposition, outcome.tickets) == ("threaded", (tid,))
    assert desk.messages(tid)[-1].threaded_by.startswith("bounce of")
    assert len(desk.outbox()) == 1


def test_acknowledgements_are_rate_limited_per_sender(desk: Desk) -> None:
    for n in range(5):
        desk.drop(email(subject=f"Request {n}"))
    desk.drop(email(subject="From someone else", frm="carol@corp.example"))
    outcomes = desk.poll()
    assert [o.disposition for o in outcomes] == ["new-ticket"] * 6
    limit = desk.settings.queue_by_key("it").auto_ack_per_hour
    assert limit == 3
    to = [item.to_addr for item in desk.outbox()]
    assert to.count("bob@corp.example") == limit
    assert to.count("carol@corp.example") == 1
    # and later in the same hour
    desk.deliver(email(subject="Request 6"))
    assert [item.to_addr for item in desk.outbox()].count("bob@corp.example") == limit


def test_own_mail_never_becomes_a_ticket(desk: Desk) -> None:
    (tid,) = desk.deliver(email()).tickets
    (item,) = desk.outbox()
    # Our acknowledgement coming back (e.g. via a Cc): its Message-ID is ours.
    assert desk.deliver(item.raw).disposition == "own-mail"
    # A stamp alone proves nothing (another desk, or a forgery): a ticket, never answered.
    stamped = email(frm="Desk <desk@vendor.example>", headers=(f"X-Deskq-Ticket: {tid}",))
    other = desk.deliver(stamped)
    assert other.disposition == "new-ticket"
    assert len(desk.outbox()) == 1
    # our acknowledgement without the stamp: the same email (identity ignores the stamp)
    unstamped = b"\n".join(
        line for line in item.raw.splitlines() if not line.startswith(b"X-Deskq-Ticket")
    )
    assert parse(unstamped).header("x-deskq-ticket") == ""
    outcome = desk.deliver(unstamped)
    assert outcome.disposition == "duplicate"
    assert outcome.tickets == ()
    assert desk.count(Ticket) == 2
    assert [r.disposition for r in desk.raws()] == ["new-ticket", "own-mail", "new-ticket"]
    assert len(desk.outbox()) == 1
    # A copy of our own mail naming another queue's alias opens nothing there either.
    to_hr = b"Delivered-To: hr@corp.example\n" + item.raw
    assert desk.deliver(to_hr).disposition == "duplicate"
    assert desk.count(Ticket) == 2


# --------------------------------------------------------------------------- quarantine


def test_quarantine_and_release(make_desk: Callable[..., Desk], db_url: str) -> None:
    desk = make_desk(db_url, hr_extra='allowed_domains = ["corp.example"]\nauto_ack = true')
    inside = desk.deliver(email(to="hr@corp.example"))
    outside = desk.deliver(email(to="hr@corp.example", frm="Eve <eve@elsewhere.example>"))
    (ok,), (held,) = inside.tickets, outside.tickets
    assert "quarantined" not in desk.flags(ok)
    assert "quarantined" in desk.flags(held)
    assert [item.ticket_id for item in desk.outbox()] == [ok]  # no ack into the quarantine
    released = desk.act(services.release, held)
    assert released.id == held
    assert "quarantined" not in desk.flags(held)
    kind, data = desk.events(held)[-1]
    assert kind == "released" and data["flag"] == "quarantined"
    with pytest.raises(services.ActionError):
        desk.act(services.release, held)
    # a queue without allowed_domains takes anyone
    (it,) = desk.deliver(email(frm="eve@elsewhere.example")).tickets
    assert "quarantined" not in desk.flags(it)


# --------------------------------------------------------------------------- broken mail


def test_oversize_mail_keeps_its_raw_source(make_desk: Callable[..., Desk], db_url: str) -> None:
    desk = make_desk(db_url, max_bytes=2048, auto_ack="true")
    raw = email(subject="Huge log", body="log line with some content\n" * 400)
    assert len(raw) > 10_000
    outcome = desk.deliver(raw)
    (tid,) = outcome.tickets
    assert "too-large" in desk.flags(tid)
    assert desk.ticket(tid).subject == "Huge log"  # headers are still read
    (stored,) = desk.raws()
    assert stored.size == len(raw)
    assert stored.content() == raw
    assert stored.sha256 == hashlib.sha256(raw).hexdigest()
    assert desk.messages(tid)[0].text_body == ""
    assert desk.outbox() == []


def _fake_parse(monkeypatch: pytest.MonkeyPatch, marker: bytes, make: Callable[[], Any]) -> None:
    real = preparing.parse

    def fake(raw: bytes) -> ParsedMessage:
        return make() if marker in raw else real(raw)

    monkeypatch.setattr(preparing, "parse", fake)


def test_unparseable_mail_becomes_a_parse_error_ticket(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_parse(
        monkeypatch,
        b"X-Break: yes",
        lambda: ParsedMessage(subject="Garbled", fatal="ValueError: cannot read this"),
    )
    raw = email(headers=("X-Break: yes",))
    outcome = desk.deliver(raw)
    assert outcome.disposition == "parse-error"
    (tid,) = outcome.tickets
    assert "parse-error" in desk.flags(tid)
    (stored,) = desk.raws()
    assert stored.content() == raw
    assert desk.messages(tid)[0].raw_id == stored.id
    assert desk.outbox() == []  # never acknowledge what we could not read
    assert desk.files("new") == []


def test_a_message_failing_to_store_becomes_parse_error_and_the_batch_goes_on(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside the transaction (here: routing that raises for one email)."""
    real_route = Ingestor.route

    def route(self: Ingestor, parsed: ParsedMessage, *args: Any) -> list[str]:
        if parsed.subject == "POISON" and parsed.fatal is None:
            raise RuntimeError("boom while storing")
        return real_route(self, parsed, *args)

    monkeypatch.setattr(Ingestor, "route", route)
    raws = [email(subject="Before"), email(subject="POISON"), email(subject="After")]
    for raw in raws:
        desk.drop(raw)
    outcomes = desk.poll()
    assert [o.disposition for o in outcomes] == ["new-ticket", "parse-error", "new-ticket"]
    (bad,) = outcomes[1].tickets
    assert "parse-error" in desk.flags(bad)
    assert sorted(r.content() for r in desk.raws()) == sorted(raws)
    assert desk.count(Ticket) == 3
    assert desk.files("new") == []
    assert len(desk.files("cur")) == 3


def test_mail_the_database_refuses_does_not_block_the_mailbox(desk: Desk, db_url: str) -> None:
    """A real content failure: a NUL byte in a Content-ID (PostgreSQL refuses NUL in text)."""
    hostile = (
        b"From: bob@corp.example\nTo: it@corp.example\nSubject: logo\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/related; boundary="B"\n\n--B\nContent-Type: text/plain\n\n'
        b"see logo\n--B\nContent-Type: image/png\nContent-ID: <lo\x00go@x>\n\nPNG\n--B--\n"
    )
    desk.drop(email(subject="Innocent bystander"))
    desk.drop(hostile)
    outcomes = desk.poll()
    assert len(outcomes) == 2
    assert desk.count(RawSource) == 2
    assert desk.files("new") == []


def test_ticket_clock_starts_at_maildir_delivery_time(desk: Desk) -> None:
    delivered = datetime(2024, 3, 1, 9, 30, 15, tzinfo=UTC)
    raw = email()
    (tid,) = desk.deliver(raw, mtime=delivered.timestamp()).tickets
    ticket = desk.ticket(tid)
    assert ticket.created_at == delivered
    (message,) = [m for m in desk.messages(tid) if m.direction == Direction.INBOUND]
    assert message.created_at == delivered
    assert desk.raws()[0].received_at == delivered
    created = [at for at, kind in _event_times(desk, tid) if kind in ("created", "message")]
    assert created == [delivered, delivered]
    # a reply's history entry never goes back before the ticket's last change
    reply = email(subject="Re: x", headers=(f"In-Reply-To: {msgid_of(raw)}",))
    desk.deliver(reply, mtime=(delivered - timedelta(days=1)).timestamp())
    assert desk.messages(tid)[-1].created_at >= ticket.updated_at


def test_delivery_time_in_the_future_is_clamped(desk: Desk) -> None:
    before = datetime.now(UTC)
    (tid,) = desk.deliver(email(), mtime=time.time() + 86_400).tickets
    assert before <= desk.ticket(tid).created_at <= datetime.now(UTC)


def _event_times(desk: Desk, tid: int) -> list[tuple[datetime, str]]:
    with desk.ws.db.session() as s:
        rows = s.execute(
            select(Event.at, Event.kind).where(Event.ticket_id == tid).order_by(Event.id)
        )
        return [(at, kind) for at, kind in rows]


def _with_pdf(subject: str, filename: str, pdf: bytes) -> bytes:
    import base64

    return (
        (
            f"From: bob@corp.example\nTo: it@corp.example\nSubject: {subject}\n"
            f"Message-ID: <{subject.replace(' ', '.')}@corp.example>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: text/plain\n\n'
            f"see attached\n--B\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n"
            f'Content-Disposition: attachment; filename="{filename}"\n\n'
        ).encode()
        + base64.encodebytes(pdf)
        + b"--B--\n"
    )


def test_attachments_are_stored_once_per_content(desk: Desk) -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 20
    one = desk.deliver(_with_pdf("First report", "report.pdf", pdf)).tickets[0]
    two = desk.deliver(_with_pdf("Second report", "../copy.pdf", pdf)).tickets[0]
    assert one != two
    assert desk.count(Blob) == 1
    with desk.ws.db.session() as s:
        rows = s.execute(select(Attachment.filename, Attachment.size, Attachment.sha256)).all()
        blob = s.scalar(select(Blob))
    assert sorted(r.filename for r in rows) == ["copy.pdf", "report.pdf"]
    assert {(r.size, r.sha256) for r in rows} == {(len(pdf), hashlib.sha256(pdf).hexdigest())}
    assert blob is not None and blob.content() == pdf and blob.size == len(pdf)


def _mail_with_html(n: int, html: str | None, plain: str | None) -> bytes:
    head = (
        f"From: Bob <bob@corp.example>\nTo: it-help@corp.example\nSubject: VPN {n}\n"
        f"Message-ID: <html-{n}@corp.example>\nMIME-Version: 1.0\n"
    )
    if html is None:
        return (head + f"Content-Type: text/plain\n\n{plain}\n").encode()
    if plain is None:
        return (head + f"Content-Type: text/html\n\n{html}\n").encode()
    return (
        head + 'Content-Type: multipart/alternative; boundary="A"\n\n'
        f"--A\nContent-Type: text/plain\n\n{plain}\n"
        f"--A\nContent-Type: text/html\n\n{html}\n--A--\n"
    ).encode()


def test_html_is_flagged_and_kept_in_the_raw_source_only(desk: Desk) -> None:
    html = "<p>The <b>VPN</b> drops every hour.</p>" + "<div class='x'></div>" * 300
    both = desk.deliver(_mail_with_html(1, html, "The VPN drops every hour.")).tickets[0]
    html_only = desk.deliver(_mail_with_html(2, html, None)).tickets[0]
    plain = desk.deliver(_mail_with_html(3, None, "Plain text only.")).tickets[0]
    shown = {}
    for tid in (both, html_only, plain):
        with desk.ws.db.session() as s:
            detail = ticket_detail(s, tid)
        assert detail is not None
        message = detail.messages[0]  # then the acknowledgement
        shown[tid] = (message.has_html, message.text.strip())
    assert shown == {
        both: (True, "The VPN drops every hour."),
        html_only: (True, "The VPN drops every hour."),
        plain: (False, "Plain text only."),
    }
    # The HTML is in each raw source, and in no column of the message.
    raws = desk.raws()
    assert [html.encode() in r.content() for r in raws] == [True, True, False]
    with desk.ws.db.session() as s:
        rows = s.execute(text("SELECT * FROM messages")).mappings().all()
    assert not any("<div" in str(v) for row in rows for v in row.values())


def test_a_long_body_is_kept_whole_its_first_part_searched(desk: Desk) -> None:
    """Past codec.TEXT_INLINE characters a body is stored compressed beside its first
    part: shown and quoted whole, searched in its first part, on both databases."""
    lines = [f"Line {n:05d}: the printer on floor {n % 7} jams. Zürich ✓" for n in range(1500)]
    lines[40] += " earlyword"
    lines[1400] += " lateword"
    body = "\n".join(lines)
    assert len(body) > 3 * codec.TEXT_INLINE
    raw = (
        "From: Bob <bob@corp.example>\nTo: it-help@corp.example\nSubject: Long log\n"
        "Message-ID: <long-1@corp.example>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body + "\n"
    ).encode()
    tid = desk.deliver(raw).tickets[0]
    short = desk.deliver(email(subject="Short one")).tickets[0]
    whole = parse(raw).text
    stored = desk.messages(tid)[0]
    assert stored.text_body == whole[: codec.TEXT_INLINE]
    assert stored.text_more is not None and len(stored.text_more) < len(whole) // 4
    assert stored.full_text == whole
    assert desk.messages(short)[0].text_more is None  # a short body: all in text_body
    with desk.ws.db.session() as s:
        detail = ticket_detail(s, tid)
        assert detail is not None and detail.messages[0].text == whole
        found = {w: set(s.scalars(search_ticket_ids(s, w))) for w in ("earlyword", "lateword")}
    assert found == {"earlyword": {tid}, "lateword": set()}


def test_names_beyond_ascii_are_stored_as_people_read_them(desk: Desk) -> None:
    raw = email(
        frm="=?utf-8?q?M=C3=BCller=2C_Jos=C3=A9?= <jose@corp.example>",
        to="=?utf-8?b?5byg5Lyf?= <it@corp.example>, Zoë <zoe@corp.example>",
    )
    tid = desk.deliver(raw).tickets[0]
    message = desk.messages(tid)[0]
    assert message.from_addr == '"Müller, José" <jose@corp.example>'
    assert message.to_addrs == "张伟 <it@corp.example>, Zoë <zoe@corp.example>"
    # An internationalised address (RFC 6532) is stored too, not a failed batch, and
    # gets its acknowledgement: UTF-8 headers, for a server offering SMTPUTF8.
    outcome = desk.deliver(email(frm="Łukasz <łukasz@corp.example>", subject="EAI"))
    assert outcome.disposition == "new-ticket"
    tid = outcome.tickets[0]
    assert desk.messages(tid)[0].from_addr == "Łukasz <łukasz@corp.example>"
    assert desk.flags(tid) == set()
    ack = desk.outbox()[-1]
    assert (ack.kind, ack.ticket_id, ack.to_addr) == ("auto-ack", tid, "łukasz@corp.example")
    assert "To: Łukasz <łukasz@corp.example>".encode() in ack.raw
    assert parse(ack.raw).to == (("Łukasz", "łukasz@corp.example"),)


# --------------------------------------------------------------------------- corpus


@pytest.mark.skipif(
    not CORPUS.is_dir(),
    reason=f"real-world corpus not found at {CORPUS} (set DESKQ_CORPUS_DIR; a clone lacks it)",
)
def test_real_world_corpus_is_ingested_without_loss(
    make_desk: Callable[..., Desk], db_url: str
) -> None:
    desk = make_desk(db_url, auto_ack="true")
    files = sorted(CORPUS.glob("*.eml"))
    for path in files:
        desk.drop(path.read_bytes(), name=path.name)
    (status,) = poll_once(desk.ws)
    assert status.failures == 0, status.last_error
    assert status.stored == len(files)
    assert desk.count(RawSource) == len(files)
    assert {o.disposition for o in status.outcomes} <= {"new-ticket", "threaded"}
    assert desk.files("new") == []
    assert len(desk.files("cur")) == len(files)
    with desk.ws.db.session() as s:
        names = set(s.scalars(select(Attachment.filename)))
        people = set(s.scalars(select(Person.address)))
    assert "Ведомости.pdf" in names
    assert "osavostenok@hse.ru" in people
    # a second pass over the same files (e.g. restored from a backup) adds nothing
    for path in files:
        desk.drop(path.read_bytes(), name="again-" + path.name)
    (status,) = poll_once(desk.ws)
    assert status.duplicates == len(files)
    assert desk.count(RawSource) == len(files)


def test_a_rating_reply_to_a_resolved_ticket_is_recorded_and_does_not_reopen(desk: Desk) -> None:
    tid, raw = _first(desk)
    desk.act(services.set_status, tid, Status.RESOLVED)
    outcome = desk.deliver(
        email(
            subject="Re: x",
            headers=(f"In-Reply-To: {msgid_of(raw)}",),
            body="4/5\nFixed fast, but I had to ask twice.\n",
        )
    )
    assert outcome.tickets == (tid,)
    assert desk.ticket(tid).status == Status.RESOLVED
    kind, data = desk.events(tid)[-1]
    assert kind == "rating" and data == {
        "rating": 4,
        "comment": "Fixed fast, but I had to ask twice.",
    }
    # any other reply still reopens
    desk.deliver(
        email(subject="Re: x", headers=(f"In-Reply-To: {msgid_of(raw)}",), body="No, broken.\n")
    )
    assert desk.ticket(tid).status == Status.OPEN


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_clocks_of_new_tickets_match_a_full_recompute(
    make_desk: Callable[..., Desk],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    """Ingestion computes new tickets' clock rows from memory; they equal read-back ones.

    Same mail into two databases: one as ingestion does it, one with every ticket's
    row computed by store.clocks.touch from the events in the database. Threads span
    batches, IT acknowledges (events added later in the same transaction), some
    tickets are resolved and answered in between.
    """
    from mail.batch import Batch
    from mail.demo_mail import generate

    mails = [m.raw for m in generate(240, seed=11)]

    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

    def run(url: str) -> list[tuple[Any, ...]]:
        desk = make_desk(url, auto_ack="true", batch_size=40)
        for i, raw in enumerate(mails):
            at = start + timedelta(minutes=37 * i)
            desk.drop(raw, mtime=at.timestamp())
            if i % 80 == 79:
                with services.acting_at(at):
                    desk.poll()
                with services.acting_at(at), desk.ws.db.write() as s:
                    for ticket in s.scalars(select(Ticket).where(Ticket.id % 7 == 0)):
                        if ticket.status != Status.RESOLVED:  # replies will reopen them
                            services.set_status(s, ticket.id, ticket.version, None, Status.RESOLVED)
        with services.acting_at(at):
            desk.poll()
        with desk.ws.db.session() as s:
            rows = [
                tuple(row)
                for row in s.execute(text("SELECT * FROM ticket_clocks ORDER BY ticket_id"))
            ]
        assert len(rows) > 100
        return rows

    def fresh(name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        return str(request.getfixturevalue("new_pg_url")())

    fast = run(fresh("fast"))
    monkeypatch.setattr(Batch, "_clocks_of_new_tickets", lambda self, events, ids: None)
    assert run(fresh("read-back")) == fast
