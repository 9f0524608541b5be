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

from mail import pipeline
from mail.ingest import Ingestor, Outcome
from store import leases
from store.config import MailboxSettings
from store.leases import Heartbeat, Lease, LeaseLost
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
    skipped: str = ""  # why this pass left the mailbox alone (another poller works it)


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


def _maildir_wait(root: Path, interval: int, stop: Callable[[], bool]) -> None:
    """Until something lands in new/ (checked twice a second) or ``interval`` passes."""
    new = root / "new"
    try:
        before = new.stat().st_mtime_ns
    except OSError:
        before = 0
    deadline = time.monotonic() + interval
    while not stop() and time.monotonic() < deadline:
        time.sleep(0.5)
        if stop():
            return
        try:
            if new.stat().st_mtime_ns != before:
                return
        except OSError:
            return


class MailboxWorker(threading.Thread):
    """Runs one mailbox until stopped: pass, wait for news, pass again; backoff on failure.

    It works the mailbox only while it holds the mailbox's lease (store.leases); until
    then, or after losing it, it stands by and looks again every second.
    """

    def __init__(
        self,
        mailbox: MailboxSettings,
        ws: Workspace,
        stop: threading.Event,
        progress: Progress | None = None,
        *,
        holder: str | None = None,
    ) -> None:
        super().__init__(name=f"mailbox-{mailbox.name}", daemon=True)
        self.mailbox, self.ws, self.stop = mailbox, ws, stop
        self.progress = progress
        # Each worker renews its own lease in its own thread: a renewal that waits on the
        # database for one mailbox does not let the others' leases run out.
        self.heartbeat = Heartbeat(ws.db)
        self.holder = holder or leases.holder_name()
        self.status = MailboxStatus(mailbox.name)
        self.ingestor = Ingestor(ws.settings, ws.db)
        self.source: object = None
        self.lease: Lease | None = None

    def halted(self) -> bool:
        """Stop working: the poller stops, or the lease is gone (or may be: not renewed
        for a whole lease time, a standby may hold it by now)."""
        lease = self.lease
        if lease is not None and not lease.lost.is_set() and lease.expired_locally():
            lease.lost.set()
            log.warning("mailbox %s: lease not renewed in time; standing by", self.mailbox.name)
        return self.stop.is_set() or lease is None or lease.lost.is_set()

    def run(self) -> None:
        self.heartbeat.start()
        try:
            self._run()
        finally:
            self.heartbeat.stop()

    def _run(self) -> None:
        backoff = Backoff()
        # A standby that cannot reach the database looks again soon: once it is back,
        # the mailbox must not wait minutes for a taker.
        looking = Backoff(cap=leases.STANDBY_POLL * 10)
        standing_by = False
        while not self.stop.is_set():
            if self.halted():
                try:
                    acquired = self._acquire(standing_by)
                    looking.reset()
                except Exception as exc:  # noqa: BLE001 - the database is away: logged, backoff
                    self._failed(exc, looking)
                    continue
                if not acquired:
                    standing_by = True
                    self.stop.wait(leases.STANDBY_POLL)
                    continue
                standing_by = False
            try:
                outcomes = self.source.pass_once(self.progress, self.halted)  # type: ignore[attr-defined]
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
            except LeaseLost as exc:
                log.warning("%s; standing by", exc)
            except Exception as exc:  # noqa: BLE001 - a worker never dies; _failed logs it
                self._failed(exc, backoff)
        self._close()
        self._let_go(release=True)

    def _acquire(self, standing_by: bool) -> bool:
        """Take the lease if free; log a change of role once. True when working now."""
        if self.lease is not None:  # lost: drop the old connection and state
            self._close()
            self._let_go(release=False)
        lease, previous = leases.try_acquire(self.ws.db, self.mailbox.name, self.holder)
        if lease is None:
            if not standing_by and previous is not None:
                log.info(
                    "mailbox %s: standing by; %s works it (lease runs %.1f s more)",
                    self.mailbox.name,
                    previous.holder,
                    previous.expires_in,
                )
            return False
        self.lease = self.ingestor.lease = lease
        self.heartbeat.hold(lease)
        # A fresh source: the previous holder may have moved the mailbox on meanwhile.
        self.source = make_source(self.mailbox, self.ws, self.ingestor)
        if previous is not None and previous.holder != self.holder:
            if previous.released:
                how = "it stopped and let go"
            elif previous.expires_in <= 0:
                how = f"its lease ran out {-previous.expires_in:.1f} s ago"
            else:
                how = "its process is gone"
            log.info(
                "mailbox %s: taking over from %s (%s)", self.mailbox.name, previous.holder, how
            )
        else:
            log.info("mailbox %s: working it (lease holder %s)", self.mailbox.name, self.holder)
        return True

    def _let_go(self, *, release: bool) -> None:
        lease, self.lease = self.lease, None
        self.ingestor.lease = None
        _let_go(self.ws, self.heartbeat, lease, release=release)

    def _failed(self, exc: Exception, backoff: Backoff) -> None:
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

    def _wait(self) -> None:
        if self.mailbox.source == "maildir":
            _maildir_wait(self.source.root, self.mailbox.poll_interval, self.halted)  # type: ignore[attr-defined]
        else:
            self.source.wait(self.halted)  # type: ignore[attr-defined]

    def _close(self) -> None:
        _close_source(self.source, self.mailbox.name)


def _close_source(source: object, name: str) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except OSError:
            log.debug("closing mailbox %s failed", name, exc_info=True)


def _let_go(ws: Workspace, heartbeat: Heartbeat, lease: Lease | None, *, release: bool) -> None:
    """Stop renewing ``lease``; with ``release``, give it up for a standby to take now."""
    if lease is None:
        return
    heartbeat.drop(lease)
    if release and not lease.lost.is_set():
        try:
            leases.release(ws.db, lease)
        except Exception:  # it runs out by itself
            log.debug("releasing the lease of %s failed", lease.name, exc_info=True)


def poll_once(ws: Workspace, progress: Progress | None = None) -> list[MailboxStatus]:
    """One pass over every mailbox, concurrently; each status says how it went.

    A mailbox another poller works is left to it (``status.skipped``), after waiting
    up to one lease time in case that poller is dead.
    """
    pipeline.tune_for_bulk()
    ingestors = {m.name: Ingestor(ws.settings, ws.db) for m in ws.settings.mailbox}
    statuses = {m.name: MailboxStatus(m.name) for m in ws.settings.mailbox}
    holder = leases.holder_name()

    def one(mailbox: MailboxSettings) -> None:
        status = statuses[mailbox.name]
        source: object = None
        lease: Lease | None = None
        heartbeat = Heartbeat(ws.db)  # one per mailbox, as in run_forever
        heartbeat.start()
        try:
            lease, previous = _lease_within(ws, mailbox.name, holder)
            if lease is None:
                status.skipped = f"{previous.holder if previous else 'another poller'} works it"
                return
            heartbeat.hold(lease)
            ingestor = ingestors[mailbox.name]
            ingestor.lease = lease
            source = make_source(mailbox, ws, ingestor)
            outcomes = source.pass_once(progress, lease.lost.is_set)  # type: ignore[attr-defined]
            status.outcomes = outcomes
            _count(status, outcomes)
        except LeaseLost as exc:
            status.skipped = str(exc)
        except Exception as exc:  # reported to the caller, never raised across threads
            status.failures = 1
            status.last_error = f"{type(exc).__name__}: {exc}"
            log.debug("mailbox %s failure", mailbox.name, exc_info=True)
        finally:
            _close_source(source, mailbox.name)
            heartbeat.stop()
            _let_go(ws, heartbeat, lease, release=True)

    threads = [
        threading.Thread(target=one, args=(m,), name=f"once-{m.name}", daemon=True)
        for m in ws.settings.mailbox
    ]
    with ws.db.background_checkpoints():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return [statuses[m.name] for m in ws.settings.mailbox]


def _lease_within(
    ws: Workspace, name: str, holder: str
) -> tuple[Lease | None, leases.Holder | None]:
    """The mailbox's lease, waiting for it at most one lease time (a dead holder's)."""
    deadline = time.monotonic() + leases.TTL_SECONDS + leases.STANDBY_POLL
    while True:
        lease, previous = leases.try_acquire(ws.db, name, holder)
        if lease is not None or time.monotonic() >= deadline:
            return lease, previous
        time.sleep(leases.STANDBY_POLL)


def run_forever(
    ws: Workspace,
    stop: threading.Event,
    progress: Progress | None = None,
    *,
    bulk: bool = True,
) -> None:
    """Poll every mailbox until ``stop`` is set (those whose lease this process gets).

    ``bulk``: tune the process for large imports (the parse worker started now, fewer
    garbage collections). The TUI, whose mail comes a few messages at a time and whose
    own objects are many, passes False.
    """
    if bulk:
        pipeline.tune_for_bulk()
    holder = leases.holder_name()
    workers = [MailboxWorker(m, ws, stop, progress, holder=holder) for m in ws.settings.mailbox]
    for w in workers:
        w.start()
    log.info(
        "polling %d mailbox(es): %s (lease holder %s)",
        len(workers),
        ", ".join(m.name for m in ws.settings.mailbox),
        holder,
    )
    with ws.db.background_checkpoints():
        while not stop.wait(1.0):
            pass
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for w in workers:
            w.join(timeout=max(deadline - time.monotonic(), 0))
    stuck = [w.name for w in workers if w.is_alive()]
    if stuck:
        log.warning("stopping without waiting for %s (blocked in the network)", ", ".join(stuck))
    log.info("stopped")
