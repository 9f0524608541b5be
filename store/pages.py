"""The queue as pages: keyset pagination in any sort order, read marks, the change feed.

A page is fetched *after* or *before* a row's key ``(sort value, id)``, never by
OFFSET, so the thousandth page costs what the first does. The change feed is the
event log's id: a screen remembers the last id it saw and asks only for what came
since, so a live queue costs one indexed query per tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from store.models import Event, Person, SavedView, Ticket, TicketRead, utcnow
from store.query import Query, conditions, sort_expression
from store.views import TicketSummary, summaries, summary_select

Key = tuple[Any, int]


@dataclass(frozen=True)
class QueueRow:
    """One ticket as the queue shows it to one provider."""

    ticket: TicketSummary
    unread: bool
    key: Key
    sla_left: float | None = None  # business seconds left on the nearest open SLA target
    sla_state: str = ""  # "", running, paused, at-risk, breached


def _keyset(expr: Any, key: Key, forward: bool) -> Any:
    value, tid = key
    if forward:
        return or_(expr > value, and_(expr == value, Ticket.id > tid))
    return or_(expr < value, and_(expr == value, Ticket.id < tid))


def _select(session: Session, query: Query, me_id: int | None) -> tuple[Any, Any]:
    expr = sort_expression(query.sort)
    read = (
        select(TicketRead.version)
        .where(TicketRead.ticket_id == Ticket.id, TicketRead.person_id == me_id)
        .scalar_subquery()
    )
    conds = conditions(session, query, me_id, paging=True)
    stmt = summary_select().add_columns(expr, read).where(*conds)
    return stmt, expr


def _rows(session: Session, rows: Sequence[Any], me_id: int | None) -> list[QueueRow]:
    tickets = summaries(session, rows)
    out = []
    for t, row in zip(tickets, rows, strict=True):
        value, read = row[-2], row[-1]
        unread = me_id is not None and (read is None or read < t.version)
        out.append(QueueRow(t, unread, (value, t.id)))
    return out


def fetch_page(
    session: Session,
    query: Query,
    me_id: int | None,
    *,
    after: Key | None = None,
    before: Key | None = None,
    limit: int = 100,
) -> list[QueueRow]:
    """Up to ``limit`` rows in display order: the first page, or those after/before a key."""
    stmt, expr = _select(session, query, me_id)
    # "forward" is the direction of the display order in the index's terms.
    forward = not query.descending
    if before is not None:
        stmt = stmt.where(_keyset(expr, before, not forward))
        order = [expr.desc(), Ticket.id.desc()] if forward else [expr.asc(), Ticket.id.asc()]
    else:
        if after is not None:
            stmt = stmt.where(_keyset(expr, after, forward))
        order = [expr.asc(), Ticket.id.asc()] if forward else [expr.desc(), Ticket.id.desc()]
    rows = session.execute(stmt.order_by(*order).limit(limit)).all()
    result = _rows(session, rows, me_id)
    session.expunge_all()
    return result[::-1] if before is not None else result


def fetch_last_page(
    session: Session, query: Query, me_id: int | None, limit: int = 100
) -> list[QueueRow]:
    """The last ``limit`` rows in display order (for G: jump to the end)."""
    stmt, expr = _select(session, query, me_id)
    order = (
        [expr.desc(), Ticket.id.desc()] if not query.descending else [expr.asc(), Ticket.id.asc()]
    )
    rows = session.execute(stmt.order_by(*order).limit(limit)).all()
    result = _rows(session, rows, me_id)
    session.expunge_all()
    return result[::-1]


def count(session: Session, query: Query, me_id: int | None) -> int:
    """How many tickets match ``query``."""
    stmt = select(func.count()).select_from(Ticket).where(*conditions(session, query, me_id))
    return int(session.scalar(stmt) or 0)


def rows_by_id(
    session: Session, query: Query, me_id: int | None, ids: Iterable[int]
) -> dict[int, QueueRow | None]:
    """Fresh rows for ``ids``; None for those that no longer match ``query``."""
    wanted = sorted(set(ids))
    found: dict[int, QueueRow | None] = dict.fromkeys(wanted)
    for start in range(0, len(wanted), 500):
        stmt, _ = _select(session, query, me_id)
        chunk = wanted[start : start + 500]
        for row in _rows(session, session.execute(stmt.where(Ticket.id.in_(chunk))).all(), me_id):
            found[row.ticket.id] = row
    session.expunge_all()
    return found


# --------------------------------------------------------------------------- change feed


@dataclass(frozen=True)
class Changes:
    """What happened since a cursor: tickets touched, those created, the new cursor.

    ``gaps`` are event ids below the new cursor that were not there yet. On PostgreSQL
    an id is taken when the event is written but becomes visible at commit, so a
    transaction that commits late leaves a gap that fills in afterwards: pass the gaps
    back to the next call and those events are reported when they appear.
    """

    cursor: int
    touched: frozenset[int]
    created: frozenset[int]
    truncated: bool = False
    gaps: frozenset[int] = frozenset()


def change_cursor(session: Session) -> int:
    """The newest event id (0 on an empty database): one index lookup."""
    return int(session.scalar(select(func.max(Event.id))) or 0)


def changes_since(
    session: Session, cursor: int, limit: int = 5000, gaps: Iterable[int] = ()
) -> Changes:
    """Tickets changed by events after ``cursor`` (or filling ``gaps``).

    ``truncated`` when more than ``limit`` events came after the cursor.
    """
    gaps = set(gaps)
    rows = session.execute(
        select(Event.id, Event.ticket_id, Event.kind)
        .where(Event.id > cursor)
        .order_by(Event.id)
        .limit(limit + 1)
    ).all()
    truncated = len(rows) > limit
    rows = list(rows[:limit])
    if gaps:
        filled = session.execute(
            select(Event.id, Event.ticket_id, Event.kind).where(Event.id.in_(sorted(gaps)))
        ).all()
        gaps -= {r.id for r in filled}
        rows += filled
    if not rows:
        return Changes(cursor, frozenset(), frozenset(), gaps=frozenset(gaps))
    new_cursor = max(cursor, *(r.id for r in rows))
    seen = {r.id for r in rows}
    gaps |= set(range(cursor + 1, new_cursor)) - seen if new_cursor - cursor <= limit * 2 else set()
    # A view is audit, not a change: it does not make anyone's row refresh.
    touched = frozenset(r.ticket_id for r in rows if r.ticket_id is not None and r.kind != "viewed")
    created = frozenset(r.ticket_id for r in rows if r.kind == "created" and r.ticket_id)
    return Changes(new_cursor, touched, created, truncated, frozenset(gaps))


# --------------------------------------------------------------------------- read marks


def mark_read(session: Session, person_id: int, ticket_id: int, version: int) -> None:
    """Remember that ``person_id`` has seen ``ticket_id`` at ``version`` (never goes back)."""
    mark = session.get(TicketRead, (person_id, ticket_id))
    if mark is None:
        session.add(TicketRead(person_id=person_id, ticket_id=ticket_id, version=version))
    elif mark.version < version:
        mark.version, mark.at = version, utcnow()


def mark_unread(session: Session, person_id: int, ticket_id: int) -> None:
    """Forget that ``person_id`` has seen ``ticket_id``: it shows as unseen again."""
    session.execute(
        delete(TicketRead).where(
            TicketRead.person_id == person_id, TicketRead.ticket_id == ticket_id
        )
    )


# --------------------------------------------------------------------------- saved views


def saved_views(session: Session, owner_id: int) -> list[tuple[str, str]]:
    """A provider's saved views as (name, query text), by name."""
    rows = session.execute(
        select(SavedView.name, SavedView.query)
        .where(SavedView.owner_id == owner_id)
        .order_by(SavedView.name)
    )
    return [(name, text) for name, text in rows]


def save_view(session: Session, owner_id: int, name: str, text: str) -> None:
    """Save (or overwrite) a named view."""
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise ValueError("a view name is 1 to 64 printable characters")
    view = session.scalar(
        select(SavedView).where(SavedView.owner_id == owner_id, SavedView.name == name)
    )
    if view is None:
        session.add(SavedView(owner_id=owner_id, name=name, query=text))
    else:
        view.query = text


def delete_view(session: Session, owner_id: int, name: str) -> bool:
    """Delete a saved view; False when there was none by that name."""
    result = session.execute(
        delete(SavedView).where(SavedView.owner_id == owner_id, SavedView.name == name)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def category_choices(session: Session, queue_ids: Sequence[int] | None = None) -> list[str]:
    """Categories already in use (at most 200), for suggestions; ``queue_ids``: only in
    these queues (the viewer's, store.access)."""
    stmt = select(Ticket.category).where(Ticket.category.is_not(None))
    if queue_ids is not None:
        stmt = stmt.where(Ticket.queue_id.in_(list(queue_ids)))
    rows = session.scalars(stmt.distinct().limit(200))
    return sorted(c for c in rows if c)


def provider_choices(session: Session) -> list[tuple[str, str]]:
    """Providers as (address, display name), for assigning."""
    rows = session.execute(
        select(Person.address, Person.display_name)
        .where(Person.is_provider.is_(True))
        .order_by(Person.address)
    )
    return [(a, n) for a, n in rows]


def person_id(session: Session, address: str) -> int | None:
    """The id of the person with ``address``, if known."""
    return session.scalar(select(Person.id).where(Person.address == address.strip().lower()))
