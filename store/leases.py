"""Leases: exactly one poller works a mailbox at a time, and a standby takes over.

Several ``deskq poll`` processes, on one host or many, may run against one database.
Each mailbox has one row in ``poller_leases``: who holds it, a *generation* bumped on
every change of holder, and when it expires. The holder renews it every
``ttl / 3`` seconds (:class:`Heartbeat`); when the holder dies, the lease runs out and
the next standby to look takes it (within ``ttl`` + ``STANDBY_POLL`` seconds; at
once when the dead holder ran on the same host, whose process table tells).

Time is the database's clock (``clock_timestamp()`` on PostgreSQL, ``julianday('now')``
on SQLite), so hosts with skewed clocks still agree on who holds what.

Renewal alone is not enough: a holder that froze (a stopped VM, a long GC pause) can
wake up after a standby took over. So every ingestion transaction is *fenced*:
:func:`fence` checks, inside the same transaction, that the lease is still this
holder's generation, and raises :class:`LeaseLost` otherwise, rolling the batch back.
On PostgreSQL the check also locks the lease row until commit, so a takeover waits for
a batch in flight to commit rather than racing it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from store.db import Database
from store.models import PollerLease

log = logging.getLogger(__name__)

TTL_SECONDS = 6.0  # a holder that stops renewing loses the lease after this
STANDBY_POLL = 1.0  # how often a standby looks whether the lease is free


class LeaseLost(RuntimeError):
    """This process no longer holds the mailbox's lease: another poller works it now."""


def holder_name() -> str:
    """``host:pid:random``: unique per process, readable in logs and ``deskq poll --status``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _pid_space() -> str | None:
    """This kernel boot's and PID namespace's identity (Linux), else None.

    Two holders with the same value see the same processes, so one can tell for sure
    that the other's pid is gone. Elsewhere no such check is made: expiry only.
    ``DESKQ_HOST_ID`` is mixed in: processes with different values count as on
    different hosts (expiry only between them).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        space = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    # The override only ever tells hosts apart: replicas sharing one value still differ
    # by boot and namespace, so none takes another's live pid for a dead one.
    override = os.environ.get("DESKQ_HOST_ID", "")
    key = f"{socket.gethostname()}|{boot}|{space}|{override}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


PID_SPACE = _pid_space()


def _dead_here(holder: str, pid_space: str | None) -> bool:
    """Whether ``holder`` ran where this process runs and its process is gone.

    A poller killed with SIGKILL on this host is taken over at once, without waiting
    for its lease to run out. A pid reused by another process only means waiting.
    """
    if pid_space is None or pid_space != PID_SPACE:
        return False
    try:
        pid = int(holder.split(":")[-2])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by someone else
        return False
    return False


def db_now(session: Session) -> ColumnElement[Any]:
    """The database's clock, epoch seconds, as an SQL expression."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday("now") - literal(2440587.5)) * literal(86400.0)
    return cast(func.extract("epoch", func.clock_timestamp()), Float)


@dataclass
class Lease:
    """A lease this process holds (or held: ``lost`` is set once it is gone)."""

    name: str
    holder: str
    generation: int
    ttl: float
    renewed: float = field(default_factory=time.monotonic)  # last successful renewal
    lost: threading.Event = field(default_factory=threading.Event)

    def expired_locally(self) -> bool:
        """No renewal for a whole ``ttl``: a standby may hold it by now, stop working."""
        return time.monotonic() - self.renewed > self.ttl


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as anyone can see it."""

    name: str
    holder: str
    generation: int
    expires_in: float  # seconds; negative once expired

    @property
    def released(self) -> bool:
        """Given up at a clean stop (not run out)."""
        return self.expires_in < -1e8  # expires_at was set to 0


def try_acquire(
    db: Database, name: str, holder: str, ttl: float = TTL_SECONDS
) -> tuple[Lease | None, Holder | None]:
    """Take the lease on ``name`` if it is free or expired.

    Returns ``(lease, previous)``: the lease (None when another live holder has it) and
    who held it before (None when nobody did), for the log.
    """
    for _ in range(2):  # a concurrent first INSERT: look again
        try:
            with db.write() as session:
                # NOWAIT: a batch in flight holds the row (see fence) -- its holder is
                # alive, or the database will end its transaction; look again later.
                row = session.scalars(
                    select(PollerLease).where(PollerLease.name == name).with_for_update(nowait=True)
                ).first()
                now = float(session.scalar(select(db_now(session))) or 0.0)  # after the lock
                if row is None:
                    session.add(
                        PollerLease(
                            name=name,
                            holder=holder,
                            generation=1,
                            pid_space=PID_SPACE,
                            acquired_at=now,
                            expires_at=now + ttl,
                        )
                    )
                    session.flush()
                    return Lease(name, holder, 1, ttl), None
                previous = Holder(name, row.holder, row.generation, row.expires_at - now)
                if (
                    row.holder != holder
                    and row.expires_at > now
                    and not _dead_here(row.holder, row.pid_space)
                ):
                    return None, previous
                row.holder = holder
                row.pid_space = PID_SPACE
                row.generation += 1
                row.acquired_at = now
                row.expires_at = now + ttl
                generation = row.generation
            return Lease(name, holder, generation, ttl), previous
        except IntegrityError:
            continue
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                return None, None
            raise
    return None, None


def renew(db: Database, lease: Lease) -> bool:
    """Extend the lease; False (and ``lease.lost`` set) when another holder has it."""
    started = time.monotonic()  # the new expiry counts from before the UPDATE, at the latest
    with db.write() as session:
        ok = _extend(session, lease)
    if ok:
        lease.renewed = started
    else:
        lease.lost.set()
    return ok


def fence(session: Session, lease: Lease) -> None:
    """Inside a write transaction: go on only if ``lease`` is still ours (and extend it)."""
    started = time.monotonic()
    if not _extend(session, lease):
        lease.lost.set()
        raise LeaseLost(
            f"mailbox {lease.name}: another poller took over (lease generation "
            f"{lease.generation} is gone); nothing of this batch was stored"
        )
    lease.renewed = started


def _extend(session: Session, lease: Lease) -> bool:
    result: Any = session.execute(
        update(PollerLease)
        .where(
            PollerLease.name == lease.name,
            PollerLease.holder == lease.holder,
            PollerLease.generation == lease.generation,
            PollerLease.expires_at > 0,  # released: never revived by a late renewal
        )
        .values(expires_at=db_now(session) + lease.ttl)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def release(db: Database, lease: Lease) -> None:
    """Give the lease up at a clean stop, so a standby need not wait for it to expire."""
    with db.write() as session:
        session.execute(
            update(PollerLease)
            .where(
                PollerLease.name == lease.name,
                PollerLease.holder == lease.holder,
                PollerLease.generation == lease.generation,
            )
            .values(expires_at=0.0)
            .execution_options(synchronize_session=False)
        )
    lease.lost.set()


def holders(db: Database) -> list[Holder]:
    """Every mailbox lease and how long it still runs."""
    with db.session() as session:
        now = float(session.scalar(select(db_now(session))) or 0.0)
        return [
            Holder(r.name, r.holder, r.generation, r.expires_at - now)
            for r in session.scalars(select(PollerLease).order_by(PollerLease.name))
        ]


def forget(db: Database, names: list[str]) -> None:
    """Drop leases of mailboxes that are no longer configured."""
    with db.write() as session:
        session.execute(delete(PollerLease).where(PollerLease.name.in_(names)))


class Heartbeat(threading.Thread):
    """Renews every lease this process holds, every ``ttl / 3`` seconds."""

    def __init__(self, db: Database, ttl: float = TTL_SECONDS) -> None:
        super().__init__(name="lease-heartbeat", daemon=True)
        self.db, self.ttl = db, ttl
        self.leases: dict[str, Lease] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def hold(self, lease: Lease) -> None:
        with self.lock:
            self.leases[lease.name] = lease

    def drop(self, lease: Lease) -> None:
        with self.lock:
            if self.leases.get(lease.name) is lease:
                del self.leases[lease.name]

    def stop(self) -> None:
        self.stopping.set()

    def _holds(self, lease: Lease) -> bool:
        with self.lock:
            return self.leases.get(lease.name) is lease

    def run(self) -> None:
        while not self.stopping.wait(self.ttl / 3):
            self.beat()

    def beat(self) -> None:
        """Renew every held lease once."""
        with self.lock:
            held = list(self.leases.values())
        for lease in held:
            if lease.lost.is_set():
                continue
            try:
                if not renew(self.db, lease) and self._holds(lease):
                    # (One dropped meanwhile, its renewal waiting for the database, was
                    # let go by this process at the end of its work: no news.)
                    log.warning(
                        "mailbox %s: lease taken over by another poller; standing by",
                        lease.name,
                    )
            except Exception as exc:  # the database is away: keep trying until ttl
                if not self._holds(lease):
                    continue  # let go meanwhile: nothing to report
                if lease.expired_locally():
                    lease.lost.set()
                    log.error(
                        "mailbox %s: lease not renewed for %.0f s (%s); stopping work "
                        "on it until the database is back",
                        lease.name,
                        self.ttl,
                        exc,
                    )
                else:
                    log.debug("lease renewal of %s failed", lease.name, exc_info=True)
