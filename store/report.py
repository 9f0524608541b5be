"""Team reports: volume, backlog, response and resolution times, SLA attainment, satisfaction.

One function, :func:`build`, gives the numbers both ``deskq report`` and the TUI's
reports screen show, read from the ``ticket_clocks`` cache (:mod:`store.clocks`), one
narrow row per ticket.

What is counted:

- The *cohort* is the tickets created in the period (``since`` to ``until``), in the
  chosen queue. Times, attainment, reopens and ratings are those tickets'.
- First response and resolution are business seconds of the calendar, with the
  calendar (wall-clock) figures beside them; percentiles are nearest-rank (the median
  of 1, 2, 3, 4 is 2), exact to the millisecond, over the tickets whose clock has stopped.
- A target is *met* when its clock stopped within it, *breached* when it stopped late
  or is still open past it (paused or not); tickets still within a running target are
  not counted either way.
- Days are days of the calendar's timezone. *Backlog* at the end of a day is every
  ticket of the queue created by then and not resolved by then (a reopened ticket
  counts as open until it is resolved again), whenever it was created.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    column,
    func,
    or_,
    select,
    values,
)
from sqlalchemy.orm import Session

from store.models import Person, Queue, TicketClock

BY = ("queue", "provider", "category", "week")
BUCKET = 900  # seconds: weeks are assembled from quarter hours (every real UTC offset)
DAYS_PER_STATEMENT = 2000  # 3 parameters a day, within SQLite's 32,766
DONE = ("resolved", "closed")


class ReportError(ValueError):
    """A report option that cannot be used; the message says what to write instead."""


@dataclass
class Figures:
    """The numbers of one group (or of the whole cohort)."""

    key: str
    received: int = 0
    resolved: int = 0  # resolved or closed now
    open: int = 0
    first_response: dict[str, float | None] = field(default_factory=dict)  # median/p90
    first_response_calendar: dict[str, float | None] = field(default_factory=dict)
    resolution: dict[str, float | None] = field(default_factory=dict)
    resolution_calendar: dict[str, float | None] = field(default_factory=dict)
    first_response_met: int = 0
    first_response_breached: int = 0
    resolution_met: int = 0
    resolution_breached: int = 0
    reopens: int = 0
    ratings: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])  # count of 1..5

    @property
    def rated(self) -> int:
        """How many tickets carry a rating."""
        return sum(self.ratings)

    @property
    def satisfaction(self) -> float | None:
        """Mean rating (1-5)."""
        n = self.rated
        return sum((i + 1) * c for i, c in enumerate(self.ratings)) / n if n else None

    @staticmethod
    def attainment(met: int, breached: int) -> float | None:
        """Share of targets met, 0-1 (None when none was decided)."""
        return met / (met + breached) if met + breached else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, with the derived figures."""
        out = asdict(self)
        out["first_response_attainment"] = self.attainment(
            self.first_response_met, self.first_response_breached
        )
        out["resolution_attainment"] = self.attainment(
            self.resolution_met, self.resolution_breached
        )
        out["rated"], out["satisfaction"] = self.rated, self.satisfaction
        return out


@dataclass(frozen=True)
class Day:
    """One day of the period: tickets received and resolved that day, backlog at its end."""

    day: date
    received: int
    resolved: int
    backlog: int


@dataclass
class Report:
    """A whole report: the cohort's totals, its groups and the days of the period."""

    since: datetime
    until: datetime
    queue: str | None
    by: str
    timezone: str
    total: Figures
    groups: list[Figures]
    days: list[Day]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "queue": self.queue,
            "by": self.by,
            "timezone": self.timezone,
            "total": self.total.as_dict(),
            "groups": [g.as_dict() for g in self.groups],
            "days": [
                {"day": d.day.isoformat(), "received": d.received, "resolved": d.resolved}
                | {"backlog": d.backlog}
                for d in self.days
            ],
        }


def parse_since(text: str, now: datetime, tz: ZoneInfo) -> datetime | None:
    """``30d``, ``12w``, ``6m`` (months of 30 days), ``2026-01-01`` or ``all`` (None)."""
    text = text.strip().lower()
    if text == "all":
        return None
    units = {"d": 1, "w": 7, "m": 30, "y": 365}
    if text[:-1].isdigit() and text[-1:] in units:
        try:
            return now - timedelta(days=int(text[:-1]) * units[text[-1]])
        except (OverflowError, ValueError):
            raise ReportError(f"--since {text!r} reaches back too far: use all") from None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"--since {text!r} is not a period: use e.g. 30d, 12w, 6m, 1y, 2026-01-01 or all"
        ) from None
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def percentiles(values: Any) -> dict[str, float | None]:
    """Nearest-rank median and 90th percentile, in seconds, of milliseconds.

    ``values``: any sequence of numbers (a NumPy array is partitioned in place).
    """
    import numpy as np  # here, not at the top: every deskq command imports this module

    ms = np.asarray(values, dtype=np.float64)
    n = len(ms)
    if not n:
        return {"median": None, "p90": None}
    ranks = [max(math.ceil(q * n), 1) - 1 for q in (0.5, 0.9)]
    ms.partition(ranks)  # the two order statistics in place: linear, no sort
    return {"median": float(ms[ranks[0]]) / 1000, "p90": float(ms[ranks[1]]) / 1000}


class _Group:
    """One group's counts, and its durations as the strings SQL sent, until finished."""

    def __init__(self, key: str) -> None:
        self.figures = Figures(key)
        self.pieces: tuple[list[str], ...] = ([], [], [], [])
        self.arrays: list[Any] = []

    def finish(self) -> Figures:
        import numpy as np

        self.arrays = [
            np.fromstring(",".join(p), sep=",") if p else np.empty(0)  # C speed, exact
            for p in self.pieces
        ]
        for name, ms in zip(_DURATIONS, self.arrays, strict=True):
            setattr(self.figures, name, percentiles(ms))
        return self.figures


def _day_starts(first: date, last: date, tz: ZoneInfo) -> list[float]:
    """Epoch seconds of local midnight for each day from ``first`` to ``last`` + 1."""
    out, day = [], first
    while day <= last + timedelta(days=1):
        out.append(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
        day += timedelta(days=1)
    return out


def build(
    session: Session,
    *,
    calendar_tz: ZoneInfo,
    since: datetime | None,
    until: datetime,
    queue: str | None = None,
    by: str = "queue",
    queue_ids: Sequence[int] | None = None,
) -> Report:
    """The report of the tickets created from ``since`` (None: ever) to ``until``.

    ``queue_ids``: the queues the viewer may see (store.access); None: all.
    """
    if by not in BY:
        raise ReportError(f"--by {by!r} is not known; use one of {', '.join(BY)}")
    c = TicketClock
    queue_id = None
    if queue is not None:
        queue_id = session.scalar(select(Queue.id).where(Queue.key == queue))
        if queue_id is None or (queue_ids is not None and queue_id not in queue_ids):
            shown = select(Queue.key).order_by(Queue.key)
            if queue_ids is not None:
                shown = shown.where(Queue.id.in_(queue_ids))
            known = ", ".join(session.scalars(shown))
            raise ReportError(f"there is no queue {queue!r}; queues are {known}")
    scope = [queue_id] if queue_id is not None else queue_ids

    def cohort(start: datetime | None) -> list[Any]:
        """The cohort's conditions, built afresh for every statement: statements compiled
        at once in several threads must not share expressions (nor their parameters)."""
        out: list[Any] = [c.created < until.timestamp()]
        if start is not None:
            out.append(c.created >= start.timestamp())
        if scope is not None:
            out.append(c.queue_id.in_(list(scope)))
        return out

    if since is None:
        first = session.scalar(select(func.min(c.created)).where(*cohort(None)))
        since = datetime.fromtimestamp(first, UTC) if first is not None else until
    if since > until:
        raise ReportError(
            f"--since {since.astimezone(calendar_tz).date()} is after the end of the period "
            f"({until.astimezone(calendar_tz).date()}): use a date in the past"
        )
    now = until.timestamp()

    names = _group_names(session, by)
    first_day = since.astimezone(calendar_tz).date()
    last_day = until.astimezone(calendar_tz).date()
    week_starts: list[float] = []
    week_names: list[str] = []
    if by == "week":
        monday = first_day - timedelta(days=first_day.weekday())
        while monday <= last_day:
            week_starts.append(datetime(*monday.timetuple()[:3], tzinfo=calendar_tz).timestamp())
            iso = monday.isocalendar()
            week_names.append(f"{iso.year}-W{iso.week:02d}")
            monday += timedelta(days=7)

    sqlite = session.get_bind().dialect.name == "sqlite"  # SQLite's CAST truncates, PG's rounds
    size = _bucket_size(_day_starts(first_day, last_day, calendar_tz))

    def key_col() -> Any:
        """The grouping expression (afresh each time, as :func:`cohort`)."""
        column = {"queue": c.queue_id, "provider": c.assignee_id, "category": c.category}.get(by)
        if column is not None:
            return column
        # weeks: hours (or quarters) in SQL, folded into local weeks here
        return cast(c.created / size, Integer) if sqlite else func.floor(c.created / size)

    groups: dict[Any, _Group] = {}
    of_key: dict[Any, _Group] = {}

    def group_of(raw: Any) -> _Group:
        found = of_key.get(raw)
        if found is None:
            key = raw
            if by == "week":
                key = week_names[max(bisect_right(week_starts, float(raw) * size) - 1, 0)]
            found = groups.get(key)
            if found is None:
                found = groups[key] = _Group(names(key) if by != "week" else str(key))
            of_key[raw] = found
        return found

    # Two grouped passes in SQL and the daily counts, on their own connections: one pass
    # for arrivals and first responses, one for resolutions and ratings. Durations come
    # as one comma-separated string per group and column, in integer milliseconds:
    # SQLite and PostgreSQL build those strings far faster than a driver hands over a
    # million rows, and NumPy parses them and picks the percentiles at C speed.
    pool = ThreadPoolExecutor(3) if _file_backed(session) else None

    def background(job: Any) -> Any:
        if pool is None:
            return _Done(job(session))
        engine = session.get_bind().engine

        def run() -> Any:
            with engine.connect() as conn:
                return job(conn)

        return pool.submit(run)

    def grouped(half: int) -> Any:
        def job(conn: Any) -> Any:
            key = key_col()
            stmt = _passes(key, now)[half].where(*cohort(since)).group_by(key)
            return conn.execute(stmt).all()

        return background(job)

    passes = [grouped(0), grouped(1)]
    days = background(
        lambda conn: _days(conn, scope, first_day, last_day, calendar_tz, since, until)
    )
    try:
        for half, job in enumerate(passes):
            for row in job.result():
                group = group_of(row[0])
                _add_counts(group.figures, half, row[1:-2])
                for i, joined in enumerate(row[-2:]):
                    if joined:
                        group.pieces[2 * half + i].append(joined)
        finished = [g.finish() for g in groups.values()]
        total = _total(list(groups.values()))
    finally:
        if pool is not None:
            pool.shutdown()

    figures = sorted(finished, key=lambda f: (-f.received, f.key))
    if by == "week":
        figures.sort(key=lambda f: f.key)
    return Report(
        since=since,
        until=until,
        queue=queue,
        by=by,
        timezone=str(calendar_tz),
        total=total,
        groups=figures,
        days=days.result(),
    )


def _total(groups: list[_Group]) -> Figures:
    """The cohort's figures from its (finished) groups'."""
    f = Figures("all")
    for g in groups:
        x = g.figures
        f.received += x.received
        f.resolved += x.resolved
        f.open += x.open
        f.reopens += x.reopens
        f.first_response_met += x.first_response_met
        f.first_response_breached += x.first_response_breached
        f.resolution_met += x.resolution_met
        f.resolution_breached += x.resolution_breached
        f.ratings = [a + b for a, b in zip(f.ratings, x.ratings, strict=True)]
    import numpy as np

    for i, name in enumerate(_DURATIONS):
        setattr(f, name, percentiles(np.concatenate([np.empty(0)] + [g.arrays[i] for g in groups])))
    return f


_DURATIONS = ("first_response", "first_response_calendar", "resolution", "resolution_calendar")


def _passes(key_col: Any, now: float) -> tuple[Any, Any]:
    """The two grouped passes over the clocks (``where`` and ``group_by`` still to add).

    First: received, resolved, reopens, first-response targets met/breached, then the
    first responses (business, calendar). Second: resolution targets met/breached,
    ratings 1-5, then the resolutions (business, calendar).
    """
    c = TicketClock

    def n(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    def judged(value: Any, target: Any, due: Any) -> tuple[Any, Any]:
        met = and_(target.is_not(None), value.is_not(None), value <= target)
        late = or_(
            and_(value.is_not(None), value > target),
            and_(value.is_(None), due.is_not(None), due <= now),  # open, already missed
        )
        return n(met), n(and_(target.is_not(None), late))

    def joined(col: Any) -> Any:
        return func.aggregate_strings(cast(cast(func.round(col * 1000), BigInteger), String), ",")

    return (
        select(
            key_col,
            func.count(),
            n(c.status.in_(DONE)),
            func.sum(c.reopens),
            *judged(c.first_response, c.first_response_target, c.first_response_due),
            joined(c.first_response),
            joined(c.first_response_calendar),
        ),
        select(
            key_col,
            *judged(c.resolution, c.resolution_target, c.resolution_due),
            *(n(c.rating == i) for i in range(1, 6)),
            joined(c.resolution),
            joined(c.resolution_calendar),
        ),
    )


def _add_counts(f: Figures, half: int, counts: Any) -> None:
    """One group's counts from the first (``half`` 0) or second pass of :func:`_passes`."""
    if half == 0:
        received, done, reopens, met, late = (int(v or 0) for v in counts)
        f.received += received
        f.resolved += done
        f.open += received - done
        f.reopens += reopens
        f.first_response_met += met
        f.first_response_breached += late
    else:
        met, late, *ratings = (int(v or 0) for v in counts)
        f.resolution_met += met
        f.resolution_breached += late
        f.ratings = [a + b for a, b in zip(f.ratings, ratings, strict=True)]


def _group_names(session: Session, by: str) -> Any:
    if by == "queue":
        queues = {qid: key for qid, key in session.execute(select(Queue.id, Queue.key))}
        return lambda key: queues.get(key, f"queue {key}")
    if by == "provider":
        people: dict[int, str] = {}

        def provider(key: int | None) -> str:
            if key is None:
                return "(unassigned)"
            if key not in people:
                p = session.get(Person, key)
                people[key] = (p.display_name or p.address) if p else f"person {key}"
            return people[key]

        return provider
    return lambda key: key if key else "(none)"


class _Done:
    """A result already there (the same face as a Future)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def _dialect(db: Any) -> str:
    """The backend's name, from a Session or a Connection."""
    dialect = db.dialect if hasattr(db, "dialect") else db.get_bind().dialect
    return str(dialect.name)


def _file_backed(session: Session) -> bool:
    """Whether other connections see the same data (not an in-memory SQLite database)."""
    url = session.get_bind().engine.url
    return url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:")


def _days(
    session: Any,
    queue_ids: Sequence[int] | None,
    first: date,
    last: date,
    tz: ZoneInfo,
    since: datetime,
    until: datetime,
) -> list[Day]:
    """Received, resolved and backlog per local day.

    One count per day over the ``created`` and ``resolved`` indexes, all days in one
    statement: a range count per day walks the index, with no per-row arithmetic.
    """
    c = TicketClock
    starts = _day_starts(first, last, tz)
    if len(starts) < 2:
        return []
    end = until.timestamp()
    ranges = [(a, min(b, end)) for a, b in pairwise(starts) if a < end]
    scope = [c.queue_id.in_(queue_ids)] if queue_ids is not None else []

    def counted(col: Any) -> tuple[int, list[int]]:
        before = session.scalar(select(func.count()).where(col < starts[0], *scope)) or 0
        per_day = [0] * len(ranges)
        for at in range(0, len(ranges), DAYS_PER_STATEMENT):
            chunk = ranges[at : at + DAYS_PER_STATEMENT]
            bounds = (
                values(
                    column("i", Integer), column("lo", Float), column("hi", Float), name="bounds"
                )
                .data([(at + i, lo, hi) for i, (lo, hi) in enumerate(chunk)])
                .cte()
            )
            inside = (
                select(func.count())
                .where(col >= bounds.c.lo, col < bounds.c.hi, *scope)
                .scalar_subquery()
            )
            for i, n in session.execute(select(bounds.c.i, inside)):
                per_day[i] = int(n)
        return int(before), per_day

    created_before, received_per = counted(c.created)
    resolved_before, resolved_per = counted(c.resolved)
    backlog = created_before - resolved_before
    out = []
    for i in range(len(ranges)):
        day = first + timedelta(days=i)
        if day > last:
            break
        backlog += received_per[i] - resolved_per[i]
        out.append(Day(day, received_per[i], resolved_per[i], backlog))
    return out


def _bucket_size(day_starts: list[float]) -> int:
    """Hours when every local midnight falls on a whole UTC hour (almost every zone)."""
    return 3600 if all(start % 3600 == 0 for start in day_starts) else BUCKET


def for_settings(
    session: Session,
    settings: Any,
    since: str,
    *,
    now: datetime,
    queue: str | None = None,
    by: str = "queue",
    queue_ids: Sequence[int] | None = None,
) -> Report:
    """The report ``deskq report`` and the reports screen show: ``since`` as typed."""
    tz = settings.business_calendar().tz
    return build(
        session,
        calendar_tz=tz,
        since=parse_since(since, now, tz),
        until=now,
        queue=queue,
        by=by,
        queue_ids=queue_ids,
    )
