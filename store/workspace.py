"""A workspace: the validated settings plus the opened database, built one way for all.

The CLI, the poller, the TUI and the tests all start from :func:`open_workspace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store import access
from store.clocks import Keeper
from store.config import Settings
from store.db import Database, DatabaseError
from store.models import Queue, QueueAlias
from store.secrets import resolve_password
from store.services import get_or_create_person


@dataclass
class Workspace:
    """Settings and database of one deskq installation."""

    settings: Settings
    db: Database

    def close(self) -> None:
        """Release the database connections."""
        self.db.close()


def open_workspace(
    settings: Settings,
    *,
    upgrade: bool = True,
    cache_mb: int = 64,
    progress: Any = None,
    report: Any = None,
) -> Workspace:
    """Open (and by default migrate) the configured database and mirror the queues into it.

    ``cache_mb``: SQLite page cache per connection (see :meth:`Database.open`).
    SLA clocks are kept from here on; after a change of calendar or SLA rules they are
    recomputed first, calling ``progress(done, total)`` between chunks. ``report(line)``:
    told how a migration goes (see :func:`store.migrate.upgrade`).
    """
    password = resolve_password(settings.database, "[database]")
    db = Database.open(
        settings.database.url,
        password=password,
        busy_timeout_ms=settings.database.busy_timeout_ms,
        upgrade=upgrade,
        cache_mb=cache_mb,
        report=report,
    )
    with db.session() as session:
        owner = access.is_owner(session)
    if owner:
        with db.write() as session:
            sync_queues(session, settings)
            access.sync_config(session, settings)
        db.keep_clocks(Keeper.from_settings(settings), progress)
    else:
        # A provider's own PostgreSQL role: the owner's processes (deskq poll) set up
        # queues and recompute clocks; this one keeps them in step as it writes.
        _check_queues(db, settings)
        db.keep_clocks(Keeper.from_settings(settings), progress, rebuild=False)
    return Workspace(settings, db)


def _check_queues(db: Database, settings: Settings) -> None:
    with db.session() as session:
        have = set(session.scalars(select(Queue.key)))
    missing = [q.key for q in settings.queue if q.key not in have]
    if missing:
        raise DatabaseError(
            f"queue(s) {', '.join(missing)} of the config are not in the database, and this "
            "role may not add them. Fix: start deskq once as the database owner "
            "(e.g. deskq poll), which sets up the queues."
        )


def sync_queues(session: Session, settings: Settings) -> None:
    """Make the queues table match the config (queues are never deleted: tickets keep them)."""
    existing = {q.key: q for q in session.scalars(select(Queue))}
    for qs in settings.queue:
        queue = existing.get(qs.key)
        if queue is None:
            queue = Queue(
                key=qs.key,
                name=qs.name,
                tag=qs.tag,
                address=qs.address.lower(),
                signature=qs.signature,
            )
            session.add(queue)
        else:
            queue.name, queue.tag, queue.signature = qs.name, qs.tag, qs.signature
            queue.address = qs.address.lower()
        session.flush()
        wanted = set(qs.all_aliases)
        for alias in session.scalars(select(QueueAlias).where(QueueAlias.address.in_(wanted))):
            if alias.queue_id != queue.id:
                alias.queue_id = queue.id
        for alias in list(queue.aliases):
            if alias.address not in wanted:
                session.delete(alias)
        have = {
            a.address
            for a in session.scalars(select(QueueAlias).where(QueueAlias.queue_id == queue.id))
        }
        for address in sorted(wanted - have):
            session.add(QueueAlias(address=address, queue_id=queue.id))
        session.flush()
    if settings.me:
        get_or_create_person(session, settings.me, provider=True)
