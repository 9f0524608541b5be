"""An IMAP mailbox as a source: exactly-once ingestion, IDLE push, polling fallback.

Per pass: SELECT, compare UIDVALIDITY, SEARCH the UIDs above the last one stored,
FETCH them in batches with BODY.PEEK[] (nothing is marked by reading), store each batch
and the new sync state in one transaction, and only after the commit apply the
after-action (``seen``, ``move:FOLDER`` or ``none``). deskq never deletes mail.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import select

from mail import imapconn
from mail.imapconn import ImapError, close_quietly
from mail.imapwire import (
    FETCH_ITEMS,
    Prefetched,
    ServerBye,
    chunk_bounds,
    fetch_sizes,
    incoming_from,
    read_fetch,
    send_fetch,
    uid_set,
)
from mail.ingest import Ingestor, Outcome
from mail.pipeline import prepared_batches
from mail.prepare import STORE_LIMIT, Incoming
from mail.standin import place_key, stand_in, stand_in_id
from store.config import MailboxSettings, Settings
from store.models import KnownCopy, MailboxState, Message, RawSource
from store.secrets import SecretError

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

SEEN = b"\\Seen"
# Messages below a refused one asked for, to tell a broken message from a server in
# trouble (the first three that are not known to be broken are tried).
PROBE_BELOW = 50
# Other folders asked for their latest message when a refused one is alone in its own.
PROBE_FOLDERS = 5
# The keyword marking mail copied by move:FOLDER on a server without MOVE.
FILED = b"$DeskqFiled"
# Dovecot ends IDLE after 30 min and NATs drop quiet connections sooner: renew often.
IDLE_RENEW_SECONDS = 240.0
# idle_check() on a dead connection returns [] at once, forever: that many instant
# empty returns in a row mean the server is gone.
DEAD_IDLE_STREAK = 5


class ImapSource:
    """One ``[[mailbox]]`` with ``source = "imap"``."""

    def __init__(self, mailbox: MailboxSettings, settings: Settings, ingestor: Ingestor) -> None:
        self.mailbox, self.settings, self.ingestor = mailbox, settings, ingestor
        self.client: IMAPClient | None = None
        self.uidvalidity: int | None = None
        self.recovered = False
        self.keywords = False
        self.served: int | None = None
        # The first pass's start, made while `deskq poll` started (mail.imapwire).
        self.prefetched: Prefetched | None = None

    # ------------------------------------------------------------------ connection

    def connect(self) -> IMAPClient:
        """Connect, secure, log in and select the folder."""
        self.recovered = False  # a drop may have cut an after-action short
        client, selected, made = imapconn.connect(self.mailbox)
        self.uidvalidity, self.keywords = selected.uidvalidity, selected.keywords
        self.client = client
        self._drop_prefetched()
        self.prefetched = made if isinstance(made, Prefetched) else None
        return client

    def _drop_prefetched(self) -> None:
        if self.prefetched is not None:
            self.prefetched.cancel()
            self.prefetched = None

    def close(self) -> None:
        """Log out (best effort)."""
        self._drop_prefetched()
        if self.client is not None:
            close_quietly(self.client)
            self.client = None

    # ------------------------------------------------------------------ passes

    def _state(self) -> tuple[int, int | None]:
        """(last stored UID, recorded UIDVALIDITY) for this folder."""
        with self.ingestor.db.session() as session:
            state = session.get(MailboxState, (self.mailbox.name, self.mailbox.folder))
            if state is None:
                return 0, None
            return state.last_uid, state.uidvalidity

    def pass_once(
        self, progress: Progress | None = None, stop: Callable[[], bool] | None = None
    ) -> list[Outcome]:
        """Store every message not stored yet; returns what became of each.

        ``stop`` is checked between batches: a long import ends at a commit boundary.
        """
        client = self.client or self.connect()
        last, known_validity = self._state()
        if known_validity is not None and known_validity != self.uidvalidity:
            log.warning(
                "mailbox %s: UIDVALIDITY changed (%s -> %s): rescanning the folder; "
                "messages already stored are recognised and not duplicated",
                self.mailbox.name,
                known_validity,
                self.uidvalidity,
            )
            last = 0
        if not self.recovered:
            self._finish_interrupted(client, last)
            self.recovered = True
        self.served = None  # the last message served in this pass (see _still_serves)
        outcomes: list[Outcome] = []
        # Begun early, from the same state: its SEARCH and first batch are this pass's.
        early, self.prefetched = self.prefetched, None
        if early is not None and not early.fits(self.uidvalidity, last):
            early.cancel()
            early = None
        # Repeat until a SEARCH finds nothing new: mail that lands during a long pass is
        # announced only in replies to the pass's own commands, which imapclient drops.
        while True:
            client = self.client or self._reopen()  # a message the server refused: reopened
            if early is not None:
                uids = early.uids
            else:
                uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
            if not uids:
                return outcomes
            outcomes += self._store_uids(client, uids, progress, stop, early)
            early = None
            if stop is not None and stop():
                return outcomes
            last = uids[-1]

    def _store_uids(
        self,
        client: IMAPClient,
        uids: list[int],
        progress: Progress | None,
        stop: Callable[[], bool] | None = None,
        early: Prefetched | None = None,
    ) -> list[Outcome]:
        if early is not None:
            sizes = early.sizes
        else:
            sizes, client = self._sizes(client, uids)
        # Larger than deskq stores: not fetched at all (a stand-in says so). No batch
        # holds more than that either, so each such email is a batch of its own.
        too_large = {uid: size for uid, size in sizes.items() if size > STORE_LIMIT}
        chunks = chunk_bounds(self.settings, uids, sizes, STORE_LIMIT)
        first: list[Incoming] | None = None
        if early is not None:
            if chunks and chunks[0] == [i.uid for i in early.first]:
                first = early.first
                self.served = first[-1].uid
            else:  # (cannot happen: the same uids, sizes and settings)
                early.cancel()
                early = None
        outcomes: list[Outcome] = []
        done = 0
        # Stored and committed, after-action not applied yet: it is applied when no
        # FETCH is in flight on the connection (see _fetch_ahead).
        committed: list[int] = []

        def after_committed() -> None:
            if committed and self.client is not None:  # (the connection may be a new one)
                pending = committed[:]
                committed.clear()  # tried once: if it fails, _finish_interrupted's turn
                self._after(self.client, pending)

        line = _Line()
        fetched = self._fetch_ahead(client, chunks, after_committed, line, too_large, first)
        batches = prepared_batches(
            fetched,
            self.settings.ingest.max_message_bytes,
            early.parsing if early is not None else None,
        )
        failed = True
        try:
            for chunk, prepared in zip(chunks, batches, strict=True):
                got = {p.item.uid for p in prepared}
                missing = [u for u in chunk if u not in got]
                if missing:
                    # Expunged since the SEARCH, or withheld by a broken server. They
                    # are not stored, so no after-action ever touches them: they stay in
                    # the folder, unread, for a person to look at.
                    log.error(
                        "mailbox %s: the server returned no message for UID(s) %s; "
                        "left untouched in %s",
                        self.mailbox.name,
                        ", ".join(map(str, missing[:20])),
                        self.mailbox.folder,
                    )
                outcomes += self.ingestor.store_batch(
                    prepared,
                    mailbox=self.mailbox.name,
                    default_queue=self.mailbox.default_queue,
                    folder=self.mailbox.folder,
                    uidvalidity=self.uidvalidity,
                    last_uid=max(chunk),
                )
                committed += [
                    p.item.uid for p in prepared if p.item.uid is not None and not p.item.unreadable
                ]
                done += len(chunk)
                if progress:
                    progress(self.mailbox.name, done, len(uids))
                if stop is not None and stop():
                    break
            failed = False
        finally:
            batches.close()
            fetched.close()
            if line.busy and self.client is not None:
                # Stopped or failed with a FETCH unanswered (or half read): reading a
                # whole batch only to drop it could outlast a shutdown, and the next
                # command would read its answer. The connection is dropped instead;
                # the next one marks what was committed (_finish_interrupted).
                self._abandon(self.client)
            else:
                try:
                    after_committed()
                except Exception:
                    if not failed:
                        raise
                    # The pass fails anyway; the next one applies these.
                    log.debug("mailbox %s: after-action left", self.mailbox.name, exc_info=True)
        return outcomes

    def _sizes(self, client: IMAPClient, uids: list[int]) -> tuple[dict[int, int], IMAPClient]:
        """The size of each of ``uids`` (RFC822.SIZE, from the server's index: no
        message is read), to keep batches within ``batch_bytes``; and the connection.

        One email needs none. A server that will not say (a message file it cannot
        read may make Dovecot answer BYE) leaves batches bounded by count alone, as
        the FETCH that follows finds the message it refuses.
        """
        if len(uids) < 2:
            return {}, client
        try:
            sizes = fetch_sizes(client, uids, self.mailbox.name)
        except (ImapError, ServerBye) as exc:
            log.warning(
                "mailbox %s: the server did not give message sizes (%s); batches are "
                "bounded by batch_size alone this pass",
                self.mailbox.name,
                str(exc)[:200],
            )
            if isinstance(exc, ServerBye):
                self._abandon(client)
                client = self._reopen()
            return {}, client
        return sizes, client

    def _abandon(self, client: IMAPClient) -> None:
        """Drop a connection that has an answer pending: no further command on it."""
        try:
            client.shutdown()
        except Exception:  # already gone
            log.debug("mailbox %s: shutdown failed", self.mailbox.name, exc_info=True)
        if self.client is client:
            self.client = None

    def _fetch_ahead(
        self,
        client: IMAPClient,
        chunks: list[list[int]],
        between: Callable[[], None],
        line: _Line,
        too_large: dict[int, int] | None = None,
        first: list[Incoming] | None = None,
    ) -> Generator[list[Incoming], None, None]:
        """Each chunk's messages, in order; the next chunk's FETCH is sent before one is
        handed over, so the server answers it while the caller stores.

        ``between`` runs whenever no command is in flight (after-actions go there: an
        IMAP client reads answers in the order it sent the commands). ``line.busy``
        says whether an answer is still unread, or was read only in part. A chunk of
        one message in ``too_large`` (UID: size) is not fetched: a stand-in takes its
        place. ``first``: the first chunk's messages, fetched before (mail.imapwire).
        """

        too_large = too_large or {}

        def send(client: IMAPClient, chunk: list[int]) -> bytes | None:
            if len(chunk) == 1 and chunk[0] in too_large:
                return None
            line.busy = True
            return send_fetch(client, uid_set(chunk), FETCH_ITEMS)

        if not chunks:
            return
        tag = None if first is not None else send(client, chunks[0])
        for index, chunk in enumerate(chunks):
            if index == 0 and first is not None:
                incoming = first
            elif tag is None:
                incoming = [self._too_large(chunk[0], too_large[chunk[0]])]
            else:
                incoming, client = self._read_chunk(client, chunk, tag, line)
            between()
            tag = send(client, chunks[index + 1]) if index + 1 < len(chunks) else None
            yield incoming

    def _read_chunk(
        self, client: IMAPClient, chunk: list[int], tag: bytes, line: _Line
    ) -> tuple[list[Incoming], IMAPClient]:
        """The messages of the FETCH sent as ``tag``; the connection (a new one after
        a refusal the server ended with BYE)."""
        try:
            incoming = self._incoming(chunk, read_fetch(client, tag, self.mailbox.name))
            if incoming:
                self.served = incoming[-1].uid
        except (ImapError, ServerBye) as exc:
            # The server refused the batch (a tagged NO, or a BYE: Dovecot's answer
            # to a message file it cannot read). One unreadable message must not
            # hold up the others: they are fetched one by one.
            line.busy = False
            if isinstance(exc, ServerBye):
                self._abandon(client)
            incoming, client = self._fetch_singly(
                None if isinstance(exc, ServerBye) else client, chunk, exc
            )
        line.busy = False
        return incoming, client

    def _fetch_singly(
        self, client: IMAPClient | None, chunk: list[int], refusal: Exception
    ) -> tuple[list[Incoming], IMAPClient]:
        """The messages of a refused FETCH, one at a time, on ``client`` or (after a BYE)
        a new connection, which is returned.

        A message the server refuses twice on its own is left in the folder, untouched,
        and logged, but only if the server serves other messages: a later one of the
        batch, or (asked for after the refusals) one the folder holds. Otherwise
        (throttling, a server in trouble) the pass fails, to be tried again; so does a
        lost connection (no answer at all).
        """
        log.warning(
            "mailbox %s: the server refused a FETCH of %d messages (%s); fetching them one by one",
            self.mailbox.name,
            len(chunk),
            str(refusal)[:200],
        )
        found: list[Incoming] = []
        refused: list[tuple[int, Exception]] = []
        for uid in chunk:
            for attempt in (1, 2):
                client = client or self._reopen()
                try:
                    tag = send_fetch(client, str(uid), FETCH_ITEMS)
                    found += self._incoming([uid], read_fetch(client, tag, self.mailbox.name))
                    break
                except (ImapError, ServerBye) as exc:
                    if isinstance(exc, ServerBye):
                        self._abandon(client)
                        client = None
                    if attempt == 2:
                        refused.append((uid, exc))
        client = client or self._reopen()
        if found:
            self.served = found[-1].uid
        # Refusals with nothing served after them may be the server's state, not the
        # messages': it must serve another message now, to tell.
        trailing = bool(refused) and (not found or refused[-1][0] > (found[-1].uid or 0))
        serves = False
        if trailing:
            serves, client = self._still_serves(client, {uid for uid, _ in refused})
        if trailing and not serves:
            raise ImapError(
                f"mailbox {self.mailbox.name!r}: the server refuses every message now "
                f"({str(refused[-1][1])[:200]}), and returned no other message, of this "
                "folder or another, to show the fault is the message's; tried again next pass"
            )
        for uid, why in refused:
            log.error(
                "mailbox %s: the server cannot return UID %d (%s); left untouched in %s "
                "for a person to look at, and a ticket flagged unreadable says so",
                self.mailbox.name,
                uid,
                str(why)[:200],
                self.mailbox.folder,
            )
        # Each refused message gets a ticket in its place: nothing vanishes unseen.
        found += [self._unreadable(uid, why) for uid, why in refused]
        found.sort(key=lambda item: item.uid or 0)
        return found, client

    def _unreadable(self, uid: int, why: Exception) -> Incoming:
        """A stand-in for a message the server will not return, stored in its place."""
        return self._stand_in(
            uid,
            "deskq could not read this email: the mail server refused to return it, "
            "twice, while it returned other messages of the same folder (on Dovecot: "
            "a message file it cannot read, a disk error).",
            "Open it in a mail client, or ask the mail server's administrator to repair it.",
            f"the mail server refused to return this email: {str(why)[:300]}",
        )

    def _too_large(self, uid: int, size: int) -> Incoming:
        """A stand-in for a message larger than deskq stores, never fetched."""
        return self._stand_in(
            uid,
            f"This email is {size / 2**20:,.0f} MB, more than deskq stores "
            f"({STORE_LIMIT / 2**20:,.0f} MB: beyond that neither memory nor the "
            "database would hold it safely). It was not fetched.",
            "Open it in a mail client and forward what matters in a smaller email.",
            f"{size:,} bytes, over deskq's limit of {STORE_LIMIT:,}: not fetched",
        )

    def _stand_in(self, uid: int, what: str, advice: str, flag: str) -> Incoming:
        """An email stored in place of one deskq cannot store (flagged unreadable).

        Its text is the same on every attempt (the identity of the stand-in, so a pass
        retried after a crash recognises it); the server's words go in the flag. The
        email itself keeps no UID in deskq: nothing ever marks or moves it.
        """
        box = self.mailbox
        folder, name = " ".join(box.folder.split()), " ".join(box.name.split())
        return stand_in(
            subject=f"Unreadable message: UID {uid} in {folder} ({name})",
            message_id=self._stand_in_id(uid),
            text=f"{what}\n\n"
            f"It is left where it is, untouched and unread: UID {uid} "
            f"(UIDVALIDITY {self.uidvalidity}) of folder {folder} in mailbox "
            f"{name}. {advice} deskq does not try to read it again.\n",
            flag=flag,
            mailbox=box.name,
            folder=box.folder,
            uidvalidity=self.uidvalidity,
            uid=uid,
        )

    def _still_serves(self, client: IMAPClient, refused: set[int]) -> tuple[bool, IMAPClient]:
        """Whether the server returns, now, another message of the folder: the one it
        served last in this pass, else up to three of the latest below the refused ones
        (a broken one left earlier may be among them); and the connection to go on with.

        A folder that holds nothing else (``move:`` empties it after every pass) has
        nothing to ask for: the latest message of another folder of the account is
        asked for instead (see :meth:`_serves_elsewhere`).
        """
        lowest = min(refused)
        candidates = [self.served] if self.served and self.served not in refused else []
        if lowest > 1:
            window = client.search(["UID", f"{max(1, lowest - 1000)}:{lowest - 1}"])
            below = sorted((u for u in window if u < lowest), reverse=True)[:PROBE_BELOW]
            # Broken ones left by earlier passes (they have stand-ins) prove nothing.
            known = self._stood_in(below)
            candidates += [u for u in below if u not in known]
        tried: set[int] = set()
        for uid in candidates:
            if uid in tried or uid in refused or len(tried) == 3:
                continue
            tried.add(uid)
            try:
                tag = send_fetch(client, str(uid), "(UID BODY.PEEK[HEADER])")
                if any(isinstance(part, tuple) for part in read_fetch(client, tag, "probe")):
                    return True, client
            except ImapError:
                continue
            except ServerBye:  # (a broken one left earlier): on to the next
                self._abandon(client)
                client = self._reopen()
        if not tried:
            return self._serves_elsewhere(), client
        return False, client

    def _stood_in(self, uids: list[int]) -> set[int]:
        """Those of ``uids`` (of this folder) that have a stand-in stored already."""
        if not uids:
            return set()
        ids = {self._stand_in_id(uid): uid for uid in uids}
        with self.ingestor.db.session() as session:
            found = session.scalars(select(Message.message_id).where(Message.message_id.in_(ids)))
            return {ids[mid] for mid in found if mid in ids}

    def _stand_in_id(self, uid: int) -> str:
        """The Message-ID of the stand-in for ``uid`` of this folder."""
        place = place_key(self.mailbox.name, self.mailbox.folder)
        return stand_in_id(f"{self.uidvalidity}.{uid}", place)

    def _serves_elsewhere(self) -> bool:
        """Whether the server returns, now, the latest message of another folder: the
        ``move:`` target first (where this folder's mail went), then the others the
        server lists, up to :data:`PROBE_FOLDERS`. On a connection of its own, each
        folder opened read-only (EXAMINE) and read with BODY.PEEK: nothing changes."""
        m = self.mailbox
        try:
            client = imapconn.open_connection(self.mailbox)
        except (ImapError, SecretError, IMAPClientError, OSError) as exc:
            log.warning("mailbox %s: probing other folders failed: %s", m.name, exc)
            return False
        try:
            folders = [m.after[5:]] if m.after.startswith("move:") else []
            try:
                folders += [
                    name
                    for flags, _, name in client.list_folders()
                    if not {f.lower() for f in flags} & {b"\\noselect", b"\\nonexistent"}
                ]
            except IMAPClientError:
                log.debug("mailbox %s: LIST failed", m.name, exc_info=True)
            tried: list[str] = []
            for folder in folders:
                if _same_folder(folder, m.folder) or folder in tried or len(tried) == PROBE_FOLDERS:
                    continue
                tried.append(folder)
                try:
                    if not int(client.select_folder(folder, readonly=True).get(b"EXISTS", 0)):
                        continue
                    tag = send_fetch(client, "*", "(UID BODY.PEEK[HEADER])")
                    if any(isinstance(part, tuple) for part in read_fetch(client, tag, "probe")):
                        log.info(
                            "mailbox %s: the server returns mail of folder %s: the refusal "
                            "is the message's",
                            m.name,
                            folder,
                        )
                        return True
                except IMAPClientAbortError:  # (a BYE too): the connection is gone
                    return False
                except (ImapError, IMAPClientError):  # refused: on to the next folder
                    continue
            return False
        except OSError:
            return False
        finally:
            close_quietly(client)

    def _reopen(self) -> IMAPClient:
        """A new connection to the same folder, within one pass: UIDs must mean the same."""
        validity = self.uidvalidity
        client = self.connect()
        if validity is not None and self.uidvalidity != validity:
            raise ImapError(
                f"mailbox {self.mailbox.name!r}: UIDVALIDITY changed during a pass "
                f"({validity} -> {self.uidvalidity}); the next pass rescans the folder"
            )
        return client

    def _incoming(self, chunk: list[int], data: list[Any]) -> list[Incoming]:
        return incoming_from(chunk, data, self.mailbox, self.uidvalidity)

    def _after(self, client: IMAPClient, uids: list[int]) -> None:
        """The after-action, applied only to committed messages."""
        if not uids or self.mailbox.after == "none":
            return
        if self.mailbox.after == "seen":
            client.add_flags(uids, [SEEN], silent=True)
            return
        target = self.mailbox.after[5:]
        if client.has_capability("MOVE"):
            client.move(uids, target)
        elif self.keywords:
            # No MOVE: copy and mark (deskq never deletes or expunges). The mark says
            # "filed" and goes first: a COPY is never made twice, not after a dropped
            # connection and not when someone marks the mail unread again. (A crash
            # right between the two leaves the mail unfiled, never doubled.)
            client.add_flags(uids, [SEEN, FILED], silent=True)
            try:
                client.copy(uids, target)
            except IMAPClientAbortError:
                raise  # cut off: the COPY may have been made, so the marks stay
            except IMAPClientError:
                # Refused (NO/BAD): nothing was copied. Unseen and unfiled again, the
                # messages are filed by the next connection.
                with contextlib.suppress(Exception):
                    client.remove_flags(uids, [SEEN, FILED], silent=True)
                raise
        else:  # a server that takes no keywords either: seen is the only mark there is
            client.copy(uids, target)
            client.add_flags(uids, [SEEN], silent=True)

    def _finish_interrupted(self, client: IMAPClient, last: int) -> None:
        """Apply after-actions a crash left undone (stored, but not yet marked)."""
        if last <= 0 or self.mailbox.after == "none":
            return
        criteria: list[Any] = ["UID", f"1:{last}"]
        if self.mailbox.after == "seen":
            criteria = ["UNSEEN", *criteria]
        elif not client.has_capability("MOVE"):  # handled mail is copied and marked
            # Unseen and not marked filed: mail a person marked unread again after it
            # was filed stays alone (as does mail filed before the mark existed).
            mark = ["NOT", "KEYWORD", FILED.decode()] if self.keywords else []
            criteria = ["UNSEEN", *mark, *criteria]
        candidates = [u for u in client.search(criteria) if u <= last]
        pending = self._stored(candidates)
        if pending:
            log.info(
                "mailbox %s: finishing after-action for %d stored message(s)",
                self.mailbox.name,
                len(pending),
            )
            self._after(client, pending)

    def _stored(self, uids: list[int]) -> list[int]:
        """Those of ``uids`` whose message this folder's ingestion committed (stored, or
        recognised as a copy of an email stored before)."""
        stored: set[int | None] = set()
        with self.ingestor.db.session() as session:
            for start in range(0, len(uids), 500):
                part = uids[start : start + 500]
                for model in (RawSource, KnownCopy):
                    stored.update(
                        session.scalars(
                            select(model.uid).where(
                                model.mailbox == self.mailbox.name,
                                model.folder == self.mailbox.folder,
                                model.uidvalidity == self.uidvalidity,
                                model.uid.in_(part),
                            )
                        )
                    )
        return sorted(u for u in stored if u is not None)

    # ------------------------------------------------------------------ waiting

    def wait(self, stop: Callable[[], bool]) -> None:
        """Block until new mail may be there (IDLE push, or the poll interval)."""
        if stop():  # halted during the pass (which may have dropped the connection)
            return
        client = self.client or self.connect()
        if self.mailbox.idle and client.has_capability("IDLE"):
            self._idle(client, stop)
            return
        deadline = time.monotonic() + self.mailbox.poll_interval
        while not stop() and time.monotonic() < deadline:
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
        client.noop()  # liveness: raises on a dead connection

    def _idle(self, client: IMAPClient, stop: Callable[[], bool]) -> None:
        # Mail that arrived during the last pass is announced in replies to the pass's
        # own commands, which imapclient drops: ask once more before going idle.
        _, responses = client.noop()
        if any(_is_news(r) for r in responses):
            return
        client.idle()
        started = time.monotonic()
        instant_empty = 0
        try:
            # An EXISTS sent right behind "+ idling" sits in imaplib's read buffer,
            # where idle_check()'s socket poll never looks.
            if any(b"EXISTS" in line or b"RECENT" in line for line in _buffered_lines(client)):
                return
            while not stop() and time.monotonic() - started < IDLE_RENEW_SECONDS:
                before = time.monotonic()
                responses = client.idle_check(timeout=0.5)
                if responses:
                    if any(_is_news(r) for r in responses):
                        return
                    instant_empty = 0
                elif time.monotonic() - before < 0.05:
                    instant_empty += 1
                    if instant_empty >= DEAD_IDLE_STREAK:
                        raise ConnectionError("IMAP connection lost during IDLE")
                else:
                    instant_empty = 0
        finally:
            client.idle_done()  # raises if the server is gone


def _buffered_lines(client: IMAPClient) -> list[bytes]:
    """Lines already received but not yet read, without waiting for more.

    Uses imapclient's imaplib connection directly (as idle_check() itself does).
    """
    sock = client.socket()
    sock.settimeout(None)
    sock.setblocking(False)
    lines: list[bytes] = []
    try:
        while True:
            try:
                lines.append(client._imap._get_line())
            except (TimeoutError, OSError):
                break
            except IMAPClientAbortError as exc:  # "EOF": nothing buffered (or gone:
                if "EOF" in str(exc):  # idle_check/idle_done will notice that)
                    break
                raise
    finally:
        sock.setblocking(True)
        client._set_read_timeout()
    return lines


class _Line:
    """Whether a FETCH answer is pending on the connection (see _fetch_ahead)."""

    busy = False


def _is_news(response: Any) -> bool:
    return (
        isinstance(response, tuple)
        and len(response) >= 2
        and response[1]
        in (
            b"EXISTS",
            b"RECENT",
        )
    )


def _same_folder(a: str, b: str) -> bool:
    """Whether two folder names name the same folder (INBOX in any case, RFC 3501)."""
    return a == b or a.upper() == b.upper() == "INBOX"


@contextmanager
def connected(source: ImapSource) -> Iterator[ImapSource]:
    """``source`` connected for the duration of the block."""
    source.connect()
    try:
        yield source
    finally:
        source.close()


def append_copy(mailbox: MailboxSettings, settings: Settings, folder: str, raw: bytes) -> None:
    """Keep a copy of ``raw`` in ``folder`` of ``mailbox`` (created if missing), marked read."""
    source = ImapSource(mailbox, settings, None)  # type: ignore[arg-type]  # no ingestion
    client = source.connect()
    try:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        client.append(folder, raw, flags=[b"\\Seen"])
    except IMAPClientError as exc:
        raise ImapError(
            f"mailbox {mailbox.name!r}: cannot keep a copy in {folder!r}: {exc}"
        ) from None
    finally:
        close_quietly(client)
