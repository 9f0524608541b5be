"""A local Maildir as a source (a local MTA, mbsync, fetchmail; and the demo).

Mail waiting in ``new/`` is stored first; only after the commit is each file renamed
into ``cur/`` with its flags (``S`` for after = "seen"), or into the Maildir++ folder
named by ``move:FOLDER``. A crash in between leaves the file in ``new/``; the next pass
stores nothing twice (identity dedupe) and finishes the move.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from mail.ingest import Incoming, Ingestor, Outcome
from mail.pipeline import prepared_batches
from store.config import MailboxSettings, Settings

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


class MaildirError(Exception):
    """The Maildir cannot be used (missing, not a Maildir, unreadable)."""


class MaildirSource:
    """One ``[[mailbox]]`` with ``source = "maildir"``."""

    def __init__(self, mailbox: MailboxSettings, settings: Settings, ingestor: Ingestor) -> None:
        self.mailbox, self.settings, self.ingestor = mailbox, settings, ingestor
        self.root = Path(mailbox.path or "").expanduser()

    def pending(self) -> list[Path]:
        """Files waiting in new/, oldest first."""
        new = self.root / "new"
        if not new.is_dir():
            raise MaildirError(
                f"mailbox {self.mailbox.name!r}: {new} is not a folder; path must point at a "
                "Maildir (with cur/ new/ tmp/)"
            )
        entries = []
        with os.scandir(new) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                entries.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
        return [path for _, _, path in sorted(entries)]

    def pass_once(
        self, progress: Progress | None = None, stop: Callable[[], bool] | None = None
    ) -> list[Outcome]:
        """Store everything waiting in new/; returns what became of each message.

        ``stop`` is checked between batches: a long import ends at a commit boundary.
        """
        files = self.pending()
        size = self.settings.ingest.batch_size
        paths: list[list[Path]] = []

        def read() -> Iterator[list[Incoming]]:
            for start in range(0, len(files), size):
                items, found = [], []
                for path in files[start : start + size]:
                    try:
                        raw = path.read_bytes()
                        delivered = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    except FileNotFoundError:  # taken by another reader meanwhile
                        continue
                    items.append(
                        Incoming(raw=raw, mailbox=self.mailbox.name, received_at=delivered)
                    )
                    found.append(path)
                paths.append(found)
                yield items

        outcomes: list[Outcome] = []
        done = 0
        limit = self.settings.ingest.max_message_bytes
        for index, prepared in enumerate(prepared_batches(read(), limit)):
            outcomes += self.ingestor.store_batch(
                prepared, mailbox=self.mailbox.name, default_queue=self.mailbox.default_queue
            )
            for path in paths[index]:
                self._after(path)
            done += len(prepared)
            if progress:
                progress(self.mailbox.name, done, len(files))
            if stop is not None and stop():
                break
        return outcomes

    def _after(self, path: Path) -> None:
        after = self.mailbox.after
        flags = "" if after == "none" else "S"
        target_root = self.root
        if after.startswith("move:"):
            target_root = self.root / ("." + after[5:].strip("/").replace("/", "."))
            for sub in ("cur", "new", "tmp"):
                (target_root / sub).mkdir(parents=True, exist_ok=True)
        base = path.name.split(":2,")[0]
        try:
            os.replace(path, target_root / "cur" / f"{base}:2,{flags}")
        except FileNotFoundError:
            log.warning(
                "mailbox %s: %s vanished before it could be marked", self.mailbox.name, path
            )
