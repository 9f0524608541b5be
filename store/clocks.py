"""The ``ticket_clocks`` table: every ticket's SLA clocks, kept in step with its event log.

Clocks are *derived* from events (:mod:`store.sla`); this table caches the result so
reports, the "breaching soon" view and ``sla check`` read one narrow row per ticket
instead of replaying millions of events. It stays a cache of the log, never a second
truth:

- every transaction that appends events updates the rows of the tickets it touched,
  in the same transaction (an ORM flush hook for the store services and the sender;
  an explicit :func:`touch` for ingestion's bulk inserts), by applying only the events
  newer than the row's ``last_event_id``;
- the calendar and the SLA rules are fingerprinted; when they change (or on the first
  open after the migration), :func:`ensure` rebuilds every row from the event log, so
  a changed policy recomputes history.

The keeper (calendar, policies, fingerprint) lives in the session's ``info`` so that
writers without settings (tools, some tests) simply leave the cache alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, Text, bindparam, event, func, select, type_coerce, update
from sqlalchemy.orm import Session, sessionmaker

from store.bulk import insert_rows
from store.calendar import Calendar
from store.models import Event, Meta, Queue, Ticket, TicketClock
from store.sla import Clocks, Policy, Report

log = logging.getLogger(__name__)

FAR = 1e12  # sort key of a ticket with no running target: after every real time
META_KEY = "sla-fingerprint"
FORMAT = 2  # bump when the row layout or the clock rules change: forces a rebuild
CHUNK = 500
CLOCKS = cast(Table, TicketClock.__table__)


@dataclass(frozen=True)
class Keeper:
    """What the clocks are computed with: a calendar and the policy for (queue, priority)."""

    calendar: Calendar
    policy: Callable[[str, str], Policy]
    fingerprint: str
    _cache: dict[tuple[str, str], Policy] = field(default_factory=dict, compare=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Keeper:
        """The keeper of a :class:`store.config.Settings`."""
        calendar = settings.business_calendar()
        day = calendar.day_length

        def policy(queue: str, priority: str) -> Policy:
            return settings.sla_policy(queue, priority, day)  # type: ignore[no-any-return]

        return cls(calendar, policy, fingerprint(settings))

    def policy_for(self, queue: str, priority: str) -> Policy:
        """The policy, remembered per (queue, priority)."""
        key = (queue, priority)
        if key not in self._cache:
            self._cache[key] = self.policy(queue, priority)
        return self._cache[key]


def fingerprint(settings: Any) -> str:
    """A digest of everything the cached clocks depend on."""
    from dataclasses import asdict

    data = {
        "format": FORMAT,
        "calendar": asdict(settings.calendar),
        "sla": [asdict(rule) for rule in settings.sla],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


def install(factory: sessionmaker[Session], keeper: Keeper) -> None:
    """Keep clocks in step on every flush of sessions made by ``factory``."""
    info = factory.kw.setdefault("info", {})
    info["clocks"] = keeper
    # The mark lives on the factory itself: event.contains() answers by id(), and a new
    # sessionmaker can get the id of a collected one whose listener it then "has".
    if not info.get("clocks_hooked"):
        event.listen(factory, "after_flush", _after_flush)
        info["clocks_hooked"] = True


def _after_flush(session: Session, _context: Any) -> None:
    ids = {obj.ticket_id for obj in session.new if isinstance(obj, Event)}
    if ids:
        touch(session, ids)


def touch(session: Session, ticket_ids: Iterable[int], keeper: Keeper | None = None) -> None:
    """Bring the rows of ``ticket_ids`` up to their newest events.

    ``keeper``: the session's own (see :func:`install`) by default; none: nothing to do.
    """
    keeper = keeper or session.info.get("clocks")
    if keeper is None:
        return
    ids = sorted(set(ticket_ids))
    for start in range(0, len(ids), CHUNK):
        _update(session, keeper, ids[start : start + CHUNK])


DATA_KINDS = frozenset({"created", "sent", "status", "rating"})  # what Clocks.apply reads


def _data(kind: str, raw: Any) -> dict[str, Any]:
    """An event's data if the clocks need it (a dict from PostgreSQL, JSON text from SQLite)."""
    if kind not in DATA_KINDS or raw is None:
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    return data if isinstance(data, dict) else {}


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _update(session: Session, keeper: Keeper, ids: list[int]) -> None:
    conn = session.connection()
    rows = select(
        CLOCKS.c.ticket_id, CLOCKS.c.last_event_id, CLOCKS.c.state, CLOCKS.c.rating
    ).where(CLOCKS.c.ticket_id.in_(ids))
    if conn.dialect.name != "sqlite":
        # Two writers may append events to one ticket without locking the ticket (the
        # sender's "sent"): the second waits here for the first to commit, then reads
        # its row and sees its events, so neither one's events are skipped.
        rows = rows.order_by(CLOCKS.c.ticket_id).with_for_update()
    have = {r.ticket_id: r for r in conn.execute(rows)}
    low = min((r.last_event_id for r in have.values()), default=0) if len(have) == len(ids) else 0
    logs: dict[int, list[Any]] = {tid: [] for tid in ids}
    # The data as stored (JSON text on SQLite), decoded below only for the few kinds
    # whose data the clocks read: most events of a busy log are messages and notes.
    for e in conn.execute(
        select(Event.id, Event.ticket_id, Event.at, Event.kind, type_coerce(Event.data, Text))
        .where(Event.ticket_id.in_(ids), Event.id > low)
        .order_by(Event.ticket_id, Event.id)
    ):
        logs[e.ticket_id].append(e)
    tickets = conn.execute(
        select(
            Ticket.id,
            Ticket.queue_id,
            Queue.key,
            Ticket.priority,
            Ticket.status,
            Ticket.assignee_id,
            Ticket.category,
        )
        .join(Queue, Queue.id == Ticket.queue_id)
        .where(Ticket.id.in_(ids))
    )
    inserts, updates = [], []
    for t in tickets:
        old = have.get(t.id)
        last = old.last_event_id if old else 0
        fresh = [(e.id, e.at, e.kind, _data(e.kind, e[4])) for e in logs[t.id] if e.id > last]
        if old is not None and not fresh:
            continue
        row = _row(
            keeper,
            Clocks.from_state(keeper.calendar, old.state) if old else Clocks(keeper.calendar),
            old.rating if old else None,
            fresh,
            last,
            t,
        )
        if row is None:
            continue  # no "created" event (yet): nothing to measure from
        if old is None:
            inserts.append(row | {"ticket_id": t.id})
        else:
            updates.append(row | {"tid": t.id})
    insert_rows(conn, CLOCKS, inserts)
    if updates:
        values: dict[str, Any] = {k: bindparam(k) for k in updates[0] if k != "tid"}
        conn.execute(
            update(CLOCKS).where(CLOCKS.c.ticket_id == bindparam("tid")).values(values), updates
        )


@dataclass
class NewTicket:
    """A ticket created in the current transaction, with every event it has so far."""

    id: int
    queue_id: int
    key: str  # its queue's
    priority: Any  # store.models.Priority
    status: Any  # store.models.Status
    events: list[tuple[int, datetime, str, dict[str, Any]]]  # (id, at, kind, data), in order
    assignee_id: int | None = None
    category: str | None = None


def add_new(session: Session, tickets: Iterable[NewTicket], keeper: Keeper | None = None) -> None:
    """The rows of tickets created in this transaction, from their events in memory.

    What :func:`touch` would write for them, without reading back events just
    written (bulk ingestion creates thousands of tickets per transaction). Events
    added later in the transaction are applied by :func:`touch` as usual.
    """
    keeper = keeper or session.info.get("clocks")
    if keeper is None:
        return
    rows = []
    for t in tickets:
        events = [
            (eid, at, kind, data if kind in DATA_KINDS and isinstance(data, dict) else {})
            for eid, at, kind, data in t.events
        ]
        row = _row(keeper, Clocks(keeper.calendar), None, events, 0, t)
        if row is not None:
            rows.append(row | {"ticket_id": t.id})
    insert_rows(session.connection(), CLOCKS, rows)


def _row(
    keeper: Keeper,
    clocks: Clocks,
    rating: int | None,
    fresh: list[tuple[int, datetime, str, dict[str, Any]]],
    last: int,
    t: Any,
) -> dict[str, Any] | None:
    """One ticket's row after applying ``fresh`` events (None: no "created" yet).

    ``t``: the ticket's id, queue_id, key, priority, status, assignee_id, category.
    """
    for _, at, kind, data in fresh:
        clocks.apply(at, kind, data)
        if kind == "rating" and isinstance(data.get("rating"), int):
            rating = data["rating"]
    if clocks.created is None:
        return None
    row = row_values(clocks, keeper.policy_for(t.key, t.priority.value))
    row |= {
        "last_event_id": fresh[-1][0] if fresh else last,
        "queue_id": t.queue_id,
        "priority": t.priority.value,
        "status": t.status.value,
        "assignee_id": t.assignee_id,
        "category": t.category,
        "rating": rating,
    }
    return row


def row_values(clocks: Clocks, policy: Policy) -> dict[str, Any]:
    """The cached columns of one ticket's clocks under ``policy`` (independent of now)."""
    created = clocks.created
    assert created is not None
    first_stop = clocks.first_response_stop()
    first_at = clocks.first_response_at()
    first_due = clocks.due(policy.first_response, first_stop)
    resolution_due = clocks.due(policy.resolution, clocks.resolved_used)
    dues = [d for d in (first_due, resolution_due) if d is not None]
    return {
        "state": clocks.to_state(),
        "created": created.timestamp(),
        "resolved": _ts(clocks.resolved),
        "first_response": first_stop,
        "first_response_calendar": (first_at - created).total_seconds() if first_at else None,
        "resolution": clocks.resolved_used,
        "resolution_calendar": (clocks.resolved - created).total_seconds()
        if clocks.resolved
        else None,
        "first_response_target": policy.first_response,
        "resolution_target": policy.resolution,
        "first_response_due": _ts(first_due),
        "resolution_due": _ts(resolution_due),
        "due": min(dues).timestamp() if dues else None,
        "waiting": clocks.waiting,
        "reopens": clocks.reopens,
    }


def ensure(factory: sessionmaker[Session], keeper: Keeper, progress: Any = None) -> int:
    """Rebuild every row if the calendar or policies changed; add rows that are missing.

    Returns how many tickets were (re)computed. ``progress(done, total)`` is called
    between chunks of a rebuild.
    """
    with factory() as s:
        stored = s.scalar(select(Meta.value).where(Meta.key == META_KEY))
        newest = s.scalar(select(func.max(Ticket.id)))
        if stored == keeper.fingerprint:
            if newest is None or s.get(TicketClock, newest) is not None:
                return 0
            missing = select(Ticket.id).where(~Ticket.id.in_(select(CLOCKS.c.ticket_id)))
            ids = list(s.scalars(missing.order_by(Ticket.id)))
        else:
            ids = list(s.scalars(select(Ticket.id).order_by(Ticket.id)))
    if stored != keeper.fingerprint:
        log.info("computing SLA clocks of %d tickets (calendar or SLA rules changed)", len(ids))
    for start in range(0, len(ids), 5000):
        part = ids[start : start + 5000]
        with factory() as s, s.begin():
            if stored != keeper.fingerprint:
                s.execute(CLOCKS.delete().where(CLOCKS.c.ticket_id.in_(part)))
            touch(s, part, keeper)
        if progress is not None:
            progress(min(start + 5000, len(ids)), len(ids))
    with factory() as s, s.begin():
        row = s.get(Meta, META_KEY)
        if row is None:
            s.add(Meta(key=META_KEY, value=keeper.fingerprint))
        else:
            row.value = keeper.fingerprint
    return len(ids)


def reports(
    session: Session, keeper: Keeper, ticket_ids: Iterable[int], now: datetime
) -> dict[int, Report]:
    """The clocks of ``ticket_ids`` as of ``now``, from the cached rows (no event replay)."""
    ids = sorted(set(ticket_ids))
    out: dict[int, Report] = {}
    for start in range(0, len(ids), CHUNK):
        rows = session.execute(
            select(CLOCKS.c.ticket_id, CLOCKS.c.state, CLOCKS.c.priority, Queue.key)
            .join(Queue, Queue.id == CLOCKS.c.queue_id)
            .where(CLOCKS.c.ticket_id.in_(ids[start : start + CHUNK]))
        )
        for tid, state, priority, queue in rows:
            clocks = Clocks.from_state(keeper.calendar, state)
            out[tid] = clocks.report(keeper.policy_for(queue, priority), now)
    return out
