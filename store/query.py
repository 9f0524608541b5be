"""The filter language of the queue: ``status:open prio:high assignee:me queue:it vpn``.

A query is whitespace-separated terms. ``key:value`` terms filter on a field (a
comma gives alternatives: ``status:new,open``; a leading ``-`` negates: ``-tag:spam``);
every other word must appear in the ticket's mail (full-text search). Double quotes
keep spaces inside a value or a phrase. ``sort:FIELD`` (``sort:-FIELD`` for descending)
chooses the order. Parsing is strict: an unknown key or value is a :class:`QueryError`
that says what would have been valid.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, false, func, not_, or_, select
from sqlalchemy.orm import Session

from store.models import Person, Priority, Queue, Status, Ticket, TicketFlag, TicketTag, utcnow


class QueryError(ValueError):
    """A filter that cannot be understood; the message says how to fix it."""


FILTER_KEYS = {
    "status": "new, open, pending, on-hold, resolved, closed (status:open,pending)",
    "prio": "low, normal, high, urgent; also prio:>=high",
    "assignee": "me, none, or part of an address or name",
    "queue": "a queue key",
    "from": "part of the requester's address or name",
    "tag": "a tag",
    "category": "a category, or none",
    "is": "active, waiting, done, unassigned, mine, unread, quarantined, merged, "
    "breaching (an SLA target running or missed), breached",
    "age": "how long ago it was opened: age:<2h, age:>3d (units m, h, d, w)",
    "id": "ticket numbers: id:12,15",
    "sort": "id, age, updated, prio, status, queue, requester, assignee, subject, left "
    "(newest, most urgent, A-Z, least SLA time left first); sort:-FIELD reverses",
}
IS_KINDS = (
    "active",
    "waiting",
    "done",
    "unassigned",
    "mine",
    "unread",
    "quarantined",
    "merged",
    "breaching",
    "breached",
)
ALIASES = {"priority": "prio", "cat": "category", "requester": "from", "to": "assignee"}
SORT_KEYS = (
    "id",
    "created",
    "updated",
    "prio",
    "status",
    "queue",
    "requester",
    "assignee",
    "subject",
    "left",
)
ACTIVE = (Status.NEW, Status.OPEN, Status.PENDING, Status.ON_HOLD)
WAITING = (Status.PENDING, Status.ON_HOLD)
DONE = (Status.RESOLVED, Status.CLOSED)
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Term:
    """One ``key:value[,value]`` term."""

    key: str
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class Query:
    """A parsed filter: field terms, free words, and the order."""

    terms: tuple[Term, ...] = ()
    words: str = ""
    sort: str = "id"
    descending: bool = True
    text: str = field(default="", compare=False)
    # The queues the viewer may see (store.access); None: every queue.
    queue_ids: tuple[int, ...] | None = None

    @property
    def uses_me(self) -> bool:
        """True when the result depends on who is looking (assignee:me, is:mine, is:unread)."""
        return any(
            (t.key == "assignee" and "me" in t.values)
            or (t.key == "is" and {"mine", "unread"} & set(t.values))
            for t in self.terms
        )


def _suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _split(text: str) -> list[str]:
    try:
        lexer = shlex.shlex(text, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        return list(lexer)
    except ValueError:
        raise QueryError('a double quote is not closed: add the closing "') from None


def _check_value(key: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise QueryError(f"{key}: needs a value: {FILTER_KEYS[key]}")
    if key == "status":
        statuses = [s.value for s in Status]
        if value.lower() not in statuses:
            raise QueryError(
                f"status:{value} is not a status{_suggest(value.lower(), statuses)}; "
                f"use {FILTER_KEYS['status']}"
            )
        return value.lower()
    if key == "prio":
        bare = value.lstrip("<>=").lower()
        op = value[: len(value) - len(bare)]
        if bare not in [p.value for p in Priority] or op not in ("", ">=", ">", "<=", "<"):
            raise QueryError(f"prio:{value} is not a priority; use {FILTER_KEYS['prio']}")
        return op + bare
    if key == "assignee" and value.lower() in ("me", "none"):
        return value.lower()
    if key == "is":
        kinds = list(IS_KINDS)
        if value.lower() not in kinds:
            raise QueryError(
                f"is:{value} is not known{_suggest(value.lower(), kinds)}; use {FILTER_KEYS['is']}"
            )
        return value.lower()
    if key == "age":
        if not re.fullmatch(r"[<>]\d+[mhdw]", value):
            raise QueryError(f"age:{value} is not understood; use {FILTER_KEYS['age']}")
        return value
    if key == "id":
        if not value.lstrip("#").isdigit():
            raise QueryError(f"id:{value} is not a ticket number")
        return value.lstrip("#")
    return value


# Each column's natural order (what sort:FIELD gives; sort:-FIELD reverses it):
# newest, most recently updated and most urgent first; names A to Z.
_NATURALLY_DESCENDING = {"id", "created", "updated", "prio"}


def _parse_sort(value: str) -> tuple[str, bool]:
    reverse = value.startswith("-")
    sort = value.lstrip("-").lower()
    sort = {"priority": "prio", "age": "created", "from": "requester"}.get(sort, sort)
    if sort not in SORT_KEYS:
        raise QueryError(
            f"sort:{value} is not a column{_suggest(sort, (*SORT_KEYS, 'age'))}; "
            f"use {FILTER_KEYS['sort']}"
        )
    return sort, (sort in _NATURALLY_DESCENDING) != reverse


def parse_query(text: str) -> Query:
    """Parse the filter bar's text; raises :class:`QueryError` naming the bad term."""
    terms: list[Term] = []
    words: list[str] = []
    sort, descending = "id", True
    for token in _split(text):
        negated = token.startswith("-") and ":" in token
        body = token[1:] if negated else token
        key, sep, value = body.partition(":")
        if not sep or not key.isalpha():
            if token.startswith("#") and token[1:].isdigit():
                terms.append(Term("id", (token[1:],)))
            else:
                words.append(token)
            continue
        key = ALIASES.get(key.lower(), key.lower())
        if key not in FILTER_KEYS:
            raise QueryError(
                f"unknown filter {key}:{_suggest(key, list(FILTER_KEYS))}; "
                f"filters are {', '.join(k + ':' for k in FILTER_KEYS)}"
            )
        if key == "sort":
            sort, descending = _parse_sort(value)
            continue
        values = tuple(_check_value(key, v) for v in value.split(","))
        terms.append(Term(key, values, negated))
    return Query(tuple(terms), " ".join(words), sort, descending, text)


# --------------------------------------------------------------------------- to SQL


def _lower(column: Any, value: str, unicode_lower: bool) -> Any:
    """lower(column), folding every letter: SQLite's own lower() folds ASCII only."""
    if unicode_lower and not value.isascii():
        return func.deskq_lower(column)  # registered on each SQLite connection (store.db)
    return func.lower(column)


def _person_match(column: Any, needle: str, unicode_lower: bool) -> ColumnElement[bool]:
    pattern = (
        "%" + needle.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    )
    people = select(Person.id).where(
        or_(
            Person.address.like(pattern, escape="\\"),
            _lower(Person.display_name, needle, unicode_lower).like(pattern, escape="\\"),
        )
    )
    condition: ColumnElement[bool] = column.in_(people)
    return condition


def _prio_condition(value: str) -> ColumnElement[bool]:
    order = [p for p in Priority]
    op = value[: len(value) - len(value.lstrip("<>="))]
    target = Priority(value[len(op) :])
    rank = order.index(target)
    chosen = {
        "": [target],
        ">=": order[rank:],
        ">": order[rank + 1 :],
        "<=": order[: rank + 1],
        "<": order[:rank],
    }.get(op)
    if chosen is None:
        raise QueryError(f"prio:{value}: use prio:high, prio:>=high or prio:<normal")
    return Ticket.priority.in_(chosen) if chosen else false()


def _is_condition(value: str, me_id: int | None) -> ColumnElement[bool]:
    from store.models import TicketRead

    if value in ("mine", "unread") and me_id is None:
        raise QueryError(f'is:{value} needs me = "your address" in the config')
    if value == "active":
        return Ticket.status.in_(ACTIVE)
    if value == "waiting":
        return Ticket.status.in_(WAITING)
    if value == "done":
        return Ticket.status.in_(DONE)
    if value == "unassigned":
        return Ticket.assignee_id.is_(None)
    if value == "mine":
        return Ticket.assignee_id == me_id
    if value == "merged":
        return Ticket.merged_into_id.is_not(None)
    if value == "quarantined":
        return Ticket.id.in_(select(TicketFlag.ticket_id).where(TicketFlag.flag == "quarantined"))
    if value in ("breaching", "breached"):
        from store.models import TicketClock

        due: ColumnElement[bool] = TicketClock.due.is_not(None)
        if value == "breached":
            due = TicketClock.due <= time.time()
        return Ticket.id.in_(select(TicketClock.ticket_id).where(due))
    # unread: no read mark, or one older than the ticket's current version
    read = select(TicketRead.version).where(
        TicketRead.ticket_id == Ticket.id, TicketRead.person_id == me_id
    )
    return func.coalesce(read.scalar_subquery(), 0) < Ticket.version


def _value_condition(
    key: str, value: str, me_id: int | None, now: datetime, unicode_lower: bool = False
) -> ColumnElement[bool]:
    if key == "status":
        return Ticket.status == Status(value)
    if key == "prio":
        return _prio_condition(value)
    if key == "assignee":
        if value.lower() == "me":
            if me_id is None:
                raise QueryError('assignee:me needs me = "your address" in the config')
            return Ticket.assignee_id == me_id
        if value.lower() == "none":
            return Ticket.assignee_id.is_(None)
        return _person_match(Ticket.assignee_id, value, unicode_lower)
    if key == "queue":
        return Ticket.queue_id.in_(select(Queue.id).where(func.lower(Queue.key) == value.lower()))
    if key == "from":
        return _person_match(Ticket.requester_id, value, unicode_lower)
    if key == "tag":
        return Ticket.id.in_(select(TicketTag.ticket_id).where(TicketTag.tag == value.lower()))
    if key == "category":
        if value.lower() == "none":
            return Ticket.category.is_(None)
        same: ColumnElement[bool] = _lower(Ticket.category, value, unicode_lower) == value.lower()
        return same
    if key == "is":
        return _is_condition(value, me_id)
    if key == "age":
        cutoff = now - timedelta(seconds=int(value[1:-1]) * _UNITS[value[-1]])
        return Ticket.created_at > cutoff if value[0] == "<" else Ticket.created_at < cutoff
    return Ticket.id == int(value)


# A search sorted on an indexed column can walk the tickets in order and probe the
# full-text index for each one until a page is full, instead of materialising every
# match. Walking costs about (page / share of matching messages) probes of ~130 us;
# materialising about 5 us per match: walking wins above ~5 * sqrt(page * messages)
# matches (about 80,000 at 1M tickets, where it turns 0.7 s into 0.13 s for a word in
# one ticket of five).
PAGE_GUESS = 200
_WALKABLE_SORTS = {"id", "created", "updated"}


def probe_threshold(messages: int) -> int:
    """How many matching messages make walking the tickets cheaper than listing matches."""
    return max(int(5 * math.sqrt(PAGE_GUESS * messages)), 1000)


# Whether a search is common enough to walk, per (database, words, threshold): every
# page of a search asks, and the answer changes only as the mail grows, which moves
# the threshold (it only affects speed: both ways give the same rows).
_COMMON: dict[tuple[str, str, int], bool] = {}


def _is_common(session: Session, fts: str) -> bool:
    from sqlalchemy import text

    from store.models import Message

    threshold = probe_threshold(session.scalar(select(func.max(Message.id))) or 0)
    key = (str(session.get_bind().engine.url), fts, threshold)
    if key not in _COMMON:
        hits = session.scalar(
            text(
                "SELECT count(*) FROM (SELECT rowid FROM messages_fts "
                "WHERE messages_fts MATCH :fts LIMIT :cap)"
            ),
            {"fts": fts, "cap": threshold},
        )
        if len(_COMMON) > 256:
            _COMMON.clear()
        _COMMON[key] = (hits or 0) >= threshold
    return _COMMON[key]


def _search_condition(session: Session, words: str, walk: bool) -> ColumnElement[bool]:
    from sqlalchemy import exists, text

    from store.models import Message
    from store.views import fts_query, search_ticket_ids

    if walk and session.get_bind().dialect.name == "sqlite":
        fts = fts_query(words) or '""'
        if _is_common(session, fts):
            probe = text(
                "messages.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH :fts "
                "AND rowid = messages.id)"
            ).bindparams(fts=fts)
            return exists().where(Message.ticket_id == Ticket.id, probe)
    condition: ColumnElement[bool] = Ticket.id.in_(search_ticket_ids(session, words))
    return condition


def conditions(
    session: Session,
    query: Query,
    me_id: int | None,
    now: datetime | None = None,
    *,
    paging: bool = False,
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``query`` (free words through full-text search).

    ``paging``: the caller reads one page in the query's order (not a count), so a
    very common word may be matched ticket by ticket instead of all at once.
    """
    now = now or utcnow()
    sqlite = session is not None and session.get_bind().dialect.name == "sqlite"
    result: list[ColumnElement[bool]] = []
    for term in query.terms:
        alternatives = [_value_condition(term.key, v, me_id, now, sqlite) for v in term.values]
        cond = or_(*alternatives) if len(alternatives) > 1 else alternatives[0]
        # NOT (NULL = x) is NULL, not true: "-assignee:bob" must keep unassigned tickets.
        result.append(not_(func.coalesce(cond, false())) if term.negated else cond)
    if query.words.strip():
        walk = paging and query.sort in _WALKABLE_SORTS
        result.append(_search_condition(session, query.words, walk))
    if query.queue_ids is not None:
        result.append(Ticket.queue_id.in_(query.queue_ids))
    return result


def rank(values: list[Any], column: Any) -> Any:
    """A CASE giving each of ``values`` its position (for ordering enums by meaning)."""
    return case({v: i for i, v in enumerate(values)}, value=column, else_=len(values))


def sort_expression(sort: str) -> Any:
    """The SQL expression a queue sorted by ``sort`` is ordered on (ties broken by id)."""
    from store.views import ASSIGNEE, REQUESTER

    if sort == "id":
        return Ticket.id
    if sort == "created":
        return Ticket.created_at
    if sort == "updated":
        return Ticket.updated_at
    if sort == "prio":
        return rank(list(Priority), Ticket.priority)
    if sort == "status":
        return rank(list(Status), Ticket.status)
    if sort == "queue":
        return Queue.key
    if sort == "requester":
        return func.lower(func.coalesce(func.nullif(REQUESTER.display_name, ""), REQUESTER.address))
    if sort == "assignee":
        name = func.coalesce(func.nullif(ASSIGNEE.display_name, ""), ASSIGNEE.address)
        return func.coalesce(func.lower(name), "")
    if sort == "left":
        from store.clocks import FAR
        from store.models import TicketClock

        due = select(TicketClock.due).where(TicketClock.ticket_id == Ticket.id)
        return func.coalesce(due.scalar_subquery(), FAR)
    return func.lower(Ticket.subject)
