"""A local Maildir as a source (a local MTA, mbsync, fetchmail; and the demo).

Mail waiting in ``new/`` is stored first; only after the commit is each file renamed
into ``cur/`` with its flags (``S`` for after = "seen"), or into the Maildir++ folder
named by ``move:FOLDER``. A crash in between leaves the file in ``new/``; the next pass
stores nothing twice (identity dedupe) and finishes the move.

Mail can also appear directly in ``cur/``: mbsync delivers messages already read on the
server there, and a mail client reading the same Maildir moves them there. Files whose
status changed (ctime) since the last scan are read too; anything already stored is
recognised by its identity, so nothing is stored twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Container, Iterator
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from mail.ingest import Ingestor, Outcome
from mail.pipeline import batch_bounds, prepared_batches
from mail.prepare import STORE_LIMIT, Incoming
from mail.standin import place_key, stand_in, stand_in_id
from store.config import MailboxSettings, Settings
from store.models import MailboxState, Message

log = logging.getLogger(__name__)
# mailbox_state row holding the ctime (ns) up to which cur/ has been read.
CUR_STATE = "maildir:cur"
# mailbox_state rows naming files in cur/ that could not be read: tried again.
UNREADABLE_STATE = "maildir:unreadable:"
# File timestamps come from a coarse kernel clock: scan a little into the past.
CTIME_MARGIN_NS = 50_000_000
Progress = Callable[[str, int, int], None]


def _delivery_time(path: Path) -> datetime | None:
    """When the file was delivered (its mtime); None if unknown or impossible."""
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (OSError, ValueError, OverflowError):  # gone meanwhile, or a year like 33658
        return None


def _size(path: Path) -> int:
    """A file's size (0 if it is gone: reading it says so)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _printable(text: str) -> str:
    """``text`` (a file name: any bytes) as printable ASCII, for a stand-in's text."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if c.isprintable() else "?" for c in escaped)


def _storable(name: str) -> bool:
    """Whether a file name can be kept in the database (not bytes beyond UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        log.error("cannot remember %r to try it again: its name is not UTF-8", name)
        return False
    return True


class MaildirError(Exception):
    """The Maildir cannot be used (missing, not a Maildir, unreadable)."""


class MaildirSource:
    """One ``[[mailbox]]`` with ``source = "maildir"``."""

    def __init__(self, mailbox: MailboxSettings, settings: Settings, ingestor: Ingestor) -> None:
        self.mailbox, self.settings, self.ingestor = mailbox, settings, ingestor
        self.root = Path(mailbox.path or "").expanduser()
        self.place = place_key(mailbox.name, str(self.root))  # names its stand-ins
        # cur/ names this process produced itself in the last pass (no need to re-read).
        self.handled: set[str] = set()

    def pending(
        self,
        since_ns: int = -1,
        skip: set[str] | frozenset[str] = frozenset(),
        exclude: Container[str] = frozenset(),
    ) -> list[Path]:
        """Files waiting in new/, and those in cur/ changed since ``since_ns`` (but not
        ``skip``); oldest first. Names in ``exclude`` are left out of both."""
        new = self.root / "new"
        if not new.is_dir():
            raise MaildirError(
                f"mailbox {self.mailbox.name!r}: {new} is not a folder; path must point at a "
                "Maildir (with cur/ new/ tmp/)"
            )
        entries = []
        for folder in ("new", "cur"):
            if folder == "cur" and (since_ns < 0 or not (self.root / "cur").is_dir()):
                continue
            with os.scandir(self.root / folder) as it:
                for entry in it:
                    if entry.name.startswith(".") or entry.name in exclude:
                        continue
                    if not entry.is_file():
                        continue
                    try:
                        info = entry.stat()
                    except FileNotFoundError:  # renamed by another reader meanwhile
                        continue
                    if folder == "cur" and (info.st_ctime_ns < since_ns or entry.name in skip):
                        continue
                    entries.append((info.st_mtime_ns, entry.name, Path(entry.path)))
        return [path for _, _, path in sorted(entries)]

    def pass_once(
        self, progress: Progress | None = None, stop: Callable[[], bool] | None = None
    ) -> list[Outcome]:
        """Store everything new; returns what became of each message.

        Scans repeat until one finds nothing: files that change while a scan is being
        stored are read by the next one. ``stop`` is checked between batches, so a
        long import ends at a commit boundary (and resumes from there next time).
        """
        outcomes: list[Outcome] = []
        since, skip = self._watermark(), self.handled
        now = self._clock_ns()
        if since > now + CTIME_MARGIN_NS:
            # The file system's clock went back: later mail may carry older times than
            # the watermark. cur/ is read whole once (what is stored is recognised).
            log.warning(
                "mailbox %s: the clock of %s went back by %.1f s; reading cur/ again",
                self.mailbox.name,
                self.root,
                (since - now) / 1e9,
            )
            since = 0
        unreadable: set[Path] = set()  # files this pass could not read
        # Files in cur/ an earlier pass could not read, tried again by name (the
        # watermark went on: files in new/ are read every pass anyway).
        owed = self._unreadable_before()
        again = [path for path in owed if path.exists()]
        while True:
            scan_started = self._clock_ns() - CTIME_MARGIN_NS
            files = self.pending(since, skip, {path.name for path in unreadable})
            files += [path for path in again if path not in files]
            again = []
            if not files:
                self._set_watermark(scan_started, owed, unreadable)
                return outcomes
            produced, stopped = self._store_files(files, outcomes, progress, stop, unreadable)
            self.handled = produced
            if stopped:  # owed files not reached yet (still there) stay owed
                self._set_watermark(since, owed, unreadable | {p for p in owed if p.exists()})
                return outcomes
            since, skip = scan_started, produced
            # Let our own renames fall behind the next scan's margin, so the final
            # watermark passes them and the next pass does not read them again.
            time.sleep(CTIME_MARGIN_NS * 1.5 / 1e9)

    def _store_files(
        self,
        files: list[Path],
        outcomes: list[Outcome],
        progress: Progress | None,
        stop: Callable[[], bool] | None,
        unreadable: set[Path],
    ) -> tuple[set[str], bool]:
        ingest = self.settings.ingest
        sizes = [_size(path) for path in files]
        bounds = batch_bounds(sizes, ingest.batch_size, ingest.batch_bytes)
        paths: list[list[Path]] = []
        produced: set[str] = set()

        def read() -> Iterator[list[Incoming]]:
            for start, end in bounds:
                items, found = [], []
                for path, size in zip(files[start:end], sizes[start:end], strict=True):
                    if size > STORE_LIMIT:
                        log.error(
                            "mailbox %s: %s is %d MB, more than deskq stores (%d MB); "
                            "left in place, not read",
                            self.mailbox.name,
                            path,
                            size >> 20,
                            STORE_LIMIT >> 20,
                        )
                        unreadable.add(path)
                        items += self._too_large(path, size)
                        continue
                    try:
                        raw = path.read_bytes()
                    except FileNotFoundError:  # taken by another reader meanwhile
                        continue
                    except OSError as exc:  # permissions, I/O error: the others go on
                        log.error(
                            "mailbox %s: cannot read %s (%s); left in place, tried again next pass",
                            self.mailbox.name,
                            path,
                            exc,
                        )
                        unreadable.add(path)
                        items += self._unreadable(path, exc)
                        continue
                    delivered = _delivery_time(path)
                    items.append(
                        Incoming(
                            raw=raw,
                            mailbox=self.mailbox.name,
                            received_at=delivered,
                            stand_in=self._stand_in_id(path),
                        )
                    )
                    found.append(path)
                paths.append(found)
                yield items

        done = 0
        limit = self.settings.ingest.max_message_bytes
        for index, prepared in enumerate(prepared_batches(read(), limit)):
            outcomes += self.ingestor.store_batch(
                prepared, mailbox=self.mailbox.name, default_queue=self.mailbox.default_queue
            )
            for path in paths[index]:
                produced.add(self._after(path))
            done += len(prepared)
            if progress:
                progress(self.mailbox.name, done, len(files))
            if stop is not None and stop():
                return produced, True
        return produced, False

    def _unreadable(self, path: Path, why: OSError) -> list[Incoming]:
        """A stand-in for a file that cannot be read (none if one was stored before)."""
        return self._stand_in(
            path,
            "deskq could not read this email: reading its file failed (the file's "
            "permissions, or a disk error).",
            "Make it readable by the user deskq runs as, or repair the disk: deskq tries "
            "it again on every pass, then stores it as an email of its own and resolves "
            "this ticket, linked to that email's.",
            f"reading the file failed: {str(why)[:300]}",
        )

    def _too_large(self, path: Path, size: int) -> list[Incoming]:
        """A stand-in for a file larger than deskq stores (none if stored before)."""
        return self._stand_in(
            path,
            f"This email is {size / 2**20:,.0f} MB, more than deskq stores "
            f"({STORE_LIMIT / 2**20:,.0f} MB: beyond that neither memory nor the "
            "database would hold it safely). It was not read.",
            "Open it in a mail client and forward what matters in a smaller email.",
            f"{size:,} bytes, over deskq's limit of {STORE_LIMIT:,}: not read",
        )

    def _stand_in(self, path: Path, what: str, advice: str, flag: str) -> list[Incoming]:
        """A ticket flagged unreadable in place of the file at ``path``, which stays
        where it is: nothing vanishes unseen, as with IMAP (mail.standin).

        Named by the file's unique part (the same in new/ and cur/, whatever its
        flags), so a file tried again on every pass gets one stand-in only: one stored
        before is found by its Message-ID, and none is made again.
        """
        box = self.mailbox
        base = path.name.partition(":2,")[0]
        message_id = self._stand_in_id(path)
        with self.ingestor.db.session() as session:
            stored = session.scalar(
                select(Message.id).where(Message.message_id == message_id).limit(1)
            )
        if stored is not None:
            return []
        name, where = _printable(" ".join(box.name.split())), _printable(str(self.root))
        item = stand_in(
            subject=f"Unreadable message: file {_printable(base)[:100]} in mailbox {name}",
            message_id=message_id,
            text=f"{what}\n\nIt is left where it is, untouched: file {_printable(base)} "
            f"(in new/ or cur/) of the Maildir {where} of mailbox {name}. {advice}\n",
            flag=flag,
            mailbox=box.name,
            received_at=_delivery_time(path),
        )
        return [item]

    def _stand_in_id(self, path: Path) -> str:
        """The Message-ID of the stand-in for the file at ``path`` (see _stand_in)."""
        base = path.name.partition(":2,")[0]
        return stand_in_id(place_key(base), self.place)

    def _clock_ns(self) -> int:
        """Now, by the clock that stamps the Maildir's files.

        On NFS or SMB that is the file server's clock, which may differ from this
        machine's by seconds or more: a file made in tmp/ tells. (Local clock if tmp/
        cannot be written.)
        """
        probe = self.root / "tmp" / f".deskq-clock.{os.getpid()}.{threading.get_ident()}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                return os.fstat(fd).st_ctime_ns
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError:
            return time.time_ns()

    def _watermark(self) -> int:
        with self.ingestor.db.session() as session:
            state = session.get(MailboxState, (self.mailbox.name, CUR_STATE))
            return state.last_uid if state is not None else 0

    def _unreadable_before(self) -> set[Path]:
        """Files in cur/ earlier passes could not read (kept in the database: a
        ``poll --once`` from cron or a restarted poller tries them again too)."""
        with self.ingestor.db.session() as session:
            rows = session.scalars(
                select(MailboxState.folder).where(
                    MailboxState.mailbox == self.mailbox.name,
                    MailboxState.folder.startswith(UNREADABLE_STATE, autoescape=True),
                )
            )
            return {self.root / "cur" / name[len(UNREADABLE_STATE) :] for name in rows}

    def _set_watermark(
        self,
        value: int,
        owed: AbstractSet[Path] = frozenset(),
        unreadable: AbstractSet[Path] = frozenset(),
    ) -> None:
        """Record how far cur/ was read, and which of its files must be tried again."""
        still = {
            path.name for path in unreadable if path.parent.name == "cur" and _storable(path.name)
        }
        with self.ingestor.db.write() as session:
            state = session.get(MailboxState, (self.mailbox.name, CUR_STATE))
            if state is None:
                session.add(
                    MailboxState(
                        mailbox=self.mailbox.name, folder=CUR_STATE, uidvalidity=0, last_uid=value
                    )
                )
            else:
                state.last_uid = value
            for name in {path.name for path in owed} - still:  # read now, or gone
                row = session.get(MailboxState, (self.mailbox.name, UNREADABLE_STATE + name))
                if row is not None:
                    session.delete(row)
            for name in still - {path.name for path in owed}:
                session.add(
                    MailboxState(
                        mailbox=self.mailbox.name,
                        folder=UNREADABLE_STATE + name,
                        uidvalidity=0,
                        last_uid=0,
                    )
                )

    def _after(self, path: Path) -> str:
        """Mark a stored file (flags kept, S added unless after = "none"); its new name."""
        after = self.mailbox.after
        base, _, old_flags = path.name.partition(":2,")
        flags = "".join(sorted(set(old_flags) | (set() if after == "none" else {"S"})))
        target_root = self.root
        if after.startswith("move:"):
            target_root = self.root / ("." + after[5:].strip("/").replace("/", "."))
            for sub in ("cur", "new", "tmp"):
                (target_root / sub).mkdir(parents=True, exist_ok=True)
        target = target_root / "cur" / f"{base}:2,{flags}"
        if target != path:
            try:
                os.replace(path, target)
            except FileNotFoundError:
                log.warning(
                    "mailbox %s: %s vanished before it could be marked", self.mailbox.name, path
                )
        return target.name
