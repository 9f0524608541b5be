"""The poller: every mailbox in its own thread, each one unable to hold up the others.

A mailbox that fails (server down, login refused, database locked) is retried with
exponential backoff and jitter, and reported in the log on every failure; the others
keep running. Everything stops promptly when the stop event is set (SIGTERM/SIGINT).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mail.ingest import Ingestor, Outcome
from store.config import MailboxSettings
from store.workspace import Workspace

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0
# How long a stop waits for mailboxes to finish their current batch (commit boundary).
STOP_GRACE_SECONDS = 20.0


class Backoff:
    """Exponential backoff with full jitter: 1 s, 2 s, 4 s ... capped at 5 minutes."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> None:
        self.first, self.cap, self.attempt = first, cap, 0

    def next(self) -> float:
        """The delay before the next attempt."""
        ceiling = min(self.cap, self.first * (2**self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Back to the first delay after a success."""
        self.attempt = 0


@dataclass
class MailboxStatus:
    """What the poller knows about one mailbox (for logs and the UI)."""

    name: str
    stored: int = 0
    duplicates: int = 0
    failures: int = 0
    last_error: str = ""
    last_success: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)


def make_source(mailbox: MailboxSettings, ws: Workspace, ingestor: Ingestor) -> object:
    """The source object for a ``[[mailbox]]`` (imported lazily: maildir needs no imapclient)."""
    if mailbox.source == "maildir":
        from mail.maildir import MaildirSource

        return MaildirSource(mailbox, ws.settings, ingestor)
    from mail.imap import ImapSource

    return ImapSource(mailbox, ws.settings, ingestor)


def _count(status: MailboxStatus, outcomes: list[Outcome]) -> None:
    status.stored += sum(o.disposition != "duplicate" for o in outcomes)
    status.duplicates += sum(o.disposition == "duplicate" for o in outcomes)
    status.last_success = time.time()


def _maildir_wait(root: Path, interval: int, stop: threading.Event) -> None:
    """Until something lands in new/ (checked twice a second) or ``interval`` passes."""
    new = root / "new"
    try:
        before = new.stat().st_mtime_ns
    except OSError:
        before = 0
    deadline = time.monotonic() + interval
    while not stop.is_set() and time.monotonic() < deadline:
        if stop.wait(0.5):
            return
        try:
            if new.stat().st_mtime_ns != before:
                return
        except OSError:
            return


class MailboxWorker(threading.Thread):
    """Runs one mailbox until stopped: pass, wait for news, pass again; backoff on failure."""

    def __init__(
        self,
        mailbox: MailboxSettings,
        ws: Workspace,
        stop: threading.Event,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(name=f"mailbox-{mailbox.name}", daemon=True)
        self.mailbox, self.ws, self.stop = mailbox, ws, stop
        self.progress = progress
        self.status = MailboxStatus(mailbox.name)
        self.source = make_source(mailbox, ws, Ingestor(ws.settings, ws.db))

    def run(self) -> None:
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                outcomes = self.source.pass_once(self.progress, self.stop.is_set)  # type: ignore[attr-defined]
                _count(self.status, outcomes)
                if outcomes:
                    log.info(
                        "mailbox %s: %d new, %d duplicate",
                        self.mailbox.name,
                        sum(o.disposition != "duplicate" for o in outcomes),
                        sum(o.disposition == "duplicate" for o in outcomes),
                    )
                if self.status.failures:
                    log.info(
                        "mailbox %s: working again after %d failure(s)",
                        self.mailbox.name,
                        self.status.failures,
                    )
                self.status.failures = 0
                backoff.reset()
                self._wait()
            except Exception as exc:  # a worker never dies; every failure is reported
                self.status.failures += 1
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff.next()
                log.error(
                    "mailbox %s: %s (failure %d in a row; retrying in %.1f s)",
                    self.mailbox.name,
                    self.status.last_error,
                    self.status.failures,
                    delay,
                )
                log.debug("mailbox %s failure", self.mailbox.name, exc_info=True)
                self._close()
                self.stop.wait(delay)
        self._close()

    def _wait(self) -> None:
        if self.mailbox.source == "maildir":
            _maildir_wait(self.source.root, self.mailbox.poll_interval, self.stop)  # type: ignore[attr-defined]
        else:
            self.source.wait(self.stop.is_set)  # type: ignore[attr-defined]

    def _close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            try:
                close()
            except OSError:
                log.debug("closing mailbox %s failed", self.mailbox.name, exc_info=True)


def poll_once(ws: Workspace, progress: Progress | None = None) -> list[MailboxStatus]:
    """One pass over every mailbox, concurrently; each status says how it went."""
    ingestors = {m.name: Ingestor(ws.settings, ws.db) for m in ws.settings.mailbox}
    statuses = {m.name: MailboxStatus(m.name) for m in ws.settings.mailbox}

    def one(mailbox: MailboxSettings) -> None:
        status = statuses[mailbox.name]
        source: object = None
        try:
            source = make_source(mailbox, ws, ingestors[mailbox.name])
            outcomes = source.pass_once(progress)  # type: ignore[attr-defined]
            status.outcomes = outcomes
            _count(status, outcomes)
        except Exception as exc:  # reported to the caller, never raised across threads
            status.failures = 1
            status.last_error = f"{type(exc).__name__}: {exc}"
            log.debug("mailbox %s failure", mailbox.name, exc_info=True)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                try:
                    close()
                except OSError:
                    log.debug("closing mailbox %s failed", mailbox.name, exc_info=True)

    threads = [
        threading.Thread(target=one, args=(m,), name=f"once-{m.name}", daemon=True)
        for m in ws.settings.mailbox
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [statuses[m.name] for m in ws.settings.mailbox]


def run_forever(ws: Workspace, stop: threading.Event, progress: Progress | None = None) -> None:
    """Poll every mailbox until ``stop`` is set."""
    workers = [MailboxWorker(m, ws, stop, progress) for m in ws.settings.mailbox]
    for w in workers:
        w.start()
    log.info(
        "polling %d mailbox(es): %s", len(workers), ", ".join(m.name for m in ws.settings.mailbox)
    )
    while not stop.wait(1.0):
        pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for w in workers:
        w.join(timeout=max(deadline - time.monotonic(), 0))
    stuck = [w.name for w in workers if w.is_alive()]
    if stuck:
        log.warning("stopping without waiting for %s (blocked in the network)", ", ".join(stuck))
    log.info("stopped")
