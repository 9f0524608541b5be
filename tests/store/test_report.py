"""Team reports, hand-computed: a small week of tickets with exact event times.

The calendar is Europe/Berlin, mon-fri 09:00-17:00. In early March 2026 Berlin is
UTC+1, so the working day is 08:00-16:00 UTC; every time below is written in UTC and
every expected figure is worked out in the comments, never by the code under test.

SLA targets: 2h first response and 1d (8 business hours) resolution by default; the
hr queue has 4h and 2d (16 business hours).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import clocks, services
from store.config import parse_settings
from store.db import Database
from store.models import Person, Queue, Status, Ticket
from store.report import (
    Day,
    Figures,
    Report,
    ReportError,
    build,
    parse_since,
    percentiles,
)
from store.workspace import sync_queues

BERLIN = ZoneInfo("Europe/Berlin")
CONFIG = """
me = "alice@corp.example"
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
[[queue]]
key = "hr"
name = "People"
tag = "HR"
address = "hr@corp.example"

[calendar]
timezone = "Europe/Berlin"
hours = ["mon-fri 09:00-17:00"]

[[sla]]
first_response = "2h"
resolution = "1d"
[[sla]]
queue = "hr"
first_response = "4h"
resolution = "2d"
"""


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# The period: Monday 2 March 00:00 Berlin (= Sunday 23:00 UTC) to Friday 6 March
# 18:00 UTC (19:00 Berlin), which is also "now" for deciding open breaches.
SINCE = utc(3, 1, 23)
UNTIL = utc(3, 6, 18)


@dataclass(frozen=True)
class Plan:
    """One ticket: its queue, creation time, who has it, and what happened (UTC)."""

    name: str
    queue: str
    created: datetime
    steps: Sequence[tuple[datetime, str]] = ()  # "reply", a status value, or "rating=N"
    assignee: str | None = None
    category: str | None = None


# Figures per ticket, business (b) and calendar (c) seconds; FR first response, RES
# resolution. Targets: it FR 7200 / RES 28800; hr FR 14400 / RES 57600.
PLANS = (
    # t1: reply after 30m, resolved Mon 12:00. FR b=c=1800 met; RES b=c=14400 met.
    Plan(
        "t1",
        "it",
        utc(3, 2, 8),
        [(utc(3, 2, 8, 30), "reply"), (utc(3, 2, 12), "resolved"), (utc(3, 2, 13), "rating=5")],
        "alice",
        "network",
    ),
    # t2: created Mon 15:00 (16:00 Berlin). Reply Tue 09:00: 1h Mon + 1h Tue = 7200 b,
    # exactly the target: met; 18h = 64800 c. Resolved Wed 10:00: 1h + 8h + 2h =
    # 39600 b, breached; 43h = 154800 c. Rated 2, then 3: the last rating counts.
    Plan(
        "t2",
        "it",
        utc(3, 2, 15),
        [
            (utc(3, 3, 9), "reply"),
            (utc(3, 4, 10), "resolved"),
            (utc(3, 4, 11), "rating=2"),
            (utc(3, 4, 12), "rating=3"),
        ],
        "bob",
        "network",
    ),
    # t3: pending after 1h (Tue 09:00) until Thu 08:00; reply Thu 09:30: 1h + 1.5h =
    # 9000 b, breached; 49.5h = 178200 c. Resolved Thu 12:00: 1h + 4h = 18000 b, met;
    # 52h = 187200 c. Unassigned, no category.
    Plan(
        "t3",
        "it",
        utc(3, 3, 8),
        [
            (utc(3, 3, 9), "pending"),
            (utc(3, 5, 8), "open"),
            (utc(3, 5, 9, 30), "reply"),
            (utc(3, 5, 12), "resolved"),
        ],
    ),
    # t4: resolved without a reply Wed 09:30 (FR stops there: b=c=5400, met), reopened
    # Wed 12:00 (same local day), resolved again Thu 10:00: 1.5h + 4h + 2h = 27000 b,
    # met; 26h = 93600 c. One reopen.
    Plan(
        "t4",
        "it",
        utc(3, 4, 8),
        [
            (utc(3, 4, 9, 30), "resolved"),
            (utc(3, 4, 12), "open"),
            (utc(3, 5, 10), "resolved"),
            (utc(3, 5, 11), "rating=4"),
        ],
        "alice",
        "hardware",
    ),
    # t5: open and unanswered since Thu 08:00: FR was due Thu 10:00, RES Thu 16:00,
    # both before UNTIL: both breached.
    Plan("t5", "it", utc(3, 5, 8), [(utc(3, 5, 8, 5), "open")], "bob"),
    # t6: created Fri 15:30 (16:30 Berlin): 0.5h used by UNTIL, due next Monday:
    # counted neither met nor breached.
    Plan("t6", "it", utc(3, 6, 15, 30)),
    # t7: created Sun 23:30 UTC = Mon 00:30 Berlin (local Monday, ISO week 10); clock
    # starts Mon 08:00 UTC; pending at Mon 11:00 after 3h: FR (2h) missed before the
    # pause, breached; RES (8h) paused within target, not counted.
    Plan("t7", "it", utc(3, 1, 23, 30), [(utc(3, 2, 11), "pending")], "alice", "hardware"),
    # t8: pending after 30m, within both targets: not counted.
    Plan("t8", "it", utc(3, 6, 8), [(utc(3, 6, 8, 30), "pending")]),
    # t9 (hr): reply after 30m (1800, met), closed after 4h (14400, met). Rated 1.
    Plan(
        "t9",
        "hr",
        utc(3, 3, 10),
        [(utc(3, 3, 10, 30), "reply"), (utc(3, 3, 14), "closed"), (utc(3, 3, 15), "rating=1")],
        "carol",
        "payroll",
    ),
    # t10 (hr): created the Friday before the period, still new: backlog only.
    Plan("t10", "hr", utc(2, 27, 10)),
    # t11 (hr): created Sun 22:30 UTC = Sun 23:30 Berlin, before the period (ISO week
    # 9 locally); resolved Tue 10:00.
    Plan("t11", "hr", utc(3, 1, 22, 30), [(utc(3, 3, 10), "resolved")]),
    # t12 (hr): created Mon 23:30 UTC = Tue 00:30 Berlin; resolved Wed 23:30 UTC = Thu
    # 00:30 Berlin, without a reply. Business: Tue 8h + Wed 8h = 57600: FR (4h)
    # breached, RES (2d = 57600) met exactly; 48h = 172800 c for both.
    Plan("t12", "hr", utc(3, 2, 23, 30), [(utc(3, 4, 23, 30), "resolved")]),
    # t13: created Fri 20:00 UTC, after UNTIL: in no figure at all.
    Plan("t13", "it", utc(3, 6, 20)),
)

PEOPLE = {
    "alice": ("alice@corp.example", "Alice Example"),
    "bob": ("bob@corp.example", ""),  # no display name: shown by address
    "carol": ("carol@corp.example", "Carol Chen"),
}


def _seed(db: Database, plans: Sequence[Plan] = PLANS, config: str = CONFIG) -> None:
    settings = parse_settings(config)
    with db.write() as s:
        sync_queues(s, settings)
    db.keep_clocks(clocks.Keeper.from_settings(settings))
    with db.write() as s:
        queues = {q.key: q for q in s.scalars(select(Queue))}
        requester = services.get_or_create_person(s, "requester@example.org")
        people = {
            key: services.get_or_create_person(s, address, name, provider=True)
            for key, (address, name) in PEOPLE.items()
        }
        for plan in plans:
            t = services.open_ticket(
                s, queue=queues[plan.queue], requester=requester, subject=plan.name, at=plan.created
            )
            # The clock row copies assignee and category from the ticket when an event
            # of the same flush is applied.
            if plan.assignee:
                t.version += 1
                t.assignee_id = people[plan.assignee].id
                services.record_event(
                    s, t, "assignment", None, {"to": PEOPLE[plan.assignee][0]}, at=plan.created
                )
            if plan.category:
                t.version += 1
                t.category = plan.category
                services.record_event(
                    s, t, "category", None, {"from": None, "to": plan.category}, at=plan.created
                )
            s.flush()
            for at, what in plan.steps:
                _step(s, t, people["alice"], at, what)
                s.flush()


def _step(s: Session, t: Ticket, actor: Person, at: datetime, what: str) -> None:
    t.version += 1
    if what == "reply":
        services.record_event(s, t, "sent", actor, {"kind": "reply"}, at=at)
    elif what.startswith("rating="):
        services.record_event(s, t, "rating", None, {"rating": int(what[7:])}, at=at)
    else:
        old, t.status = t.status, Status(what)
        data = {"from": old.value, "to": t.status.value}
        services.record_event(s, t, "status", actor, data, at=at)


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    """SQLite only, for bugs that sit in Python code, not in SQL."""
    database = Database.open(sqlite_url)
    yield database
    database.close()


def _report(db: Database, **kw: Any) -> Report:
    kw.setdefault("since", SINCE)
    kw.setdefault("until", UNTIL)
    with db.session() as s:
        return build(s, calendar_tz=BERLIN, **kw)


def _counts(f: Figures) -> tuple[Any, ...]:
    """key, received, open, resolved, FR met/breached, RES met/breached, reopens, ratings."""
    return (
        f.key,
        f.received,
        f.open,
        f.resolved,
        f.first_response_met,
        f.first_response_breached,
        f.resolution_met,
        f.resolution_breached,
        f.reopens,
        f.ratings,
    )


def _times(f: Figures) -> tuple[Any, ...]:
    """(median, p90) of first response and resolution, business then calendar."""
    return tuple(
        (d["median"], d["p90"])
        for d in (
            f.first_response,
            f.first_response_calendar,
            f.resolution,
            f.resolution_calendar,
        )
    )


# ------------------------------------------------------------------ by queue


def test_counts_attainment_reopens_and_ratings_by_queue(db: Database) -> None:
    _seed(db)
    report = _report(db)
    # Cohort: t1-t9 and t12 (t10, t11 created before SINCE, t13 after UNTIL).
    # it: t1-t8, resolved now t1-t4, open t5-t8 (t7, t8 pending count as open).
    #   FR met t1 t2 t4, breached t3 (late) t5 (open, past) t7 (paused, past);
    #   t6, t8 still within target: not counted.
    #   RES met t1 t3 t4, breached t2 (late) t5 (open, past); t6 t7 t8 not counted.
    #   Ratings: t1 5, t2 3 (its last rating), t4 4.
    # hr: t9 (closed) and t12 (resolved). FR met t9, breached t12; RES met both.
    assert [_counts(g) for g in report.groups] == [
        ("it", 8, 4, 4, 3, 3, 3, 2, 1, [0, 0, 1, 1, 1]),
        ("hr", 2, 0, 2, 1, 1, 2, 0, 0, [1, 0, 0, 0, 0]),
    ]
    assert _counts(report.total) == ("all", 10, 4, 6, 4, 4, 5, 2, 1, [1, 0, 1, 1, 1])
    assert report.total.rated == 4
    assert report.total.satisfaction == pytest.approx((1 + 3 + 4 + 5) / 4)  # 3.25
    assert report.groups[0].satisfaction == pytest.approx(4.0)  # (3 + 4 + 5) / 3
    assert report.groups[1].satisfaction == pytest.approx(1.0)
    assert (report.queue, report.by, report.timezone) == (None, "queue", "Europe/Berlin")
    assert (report.since, report.until) == (SINCE, UNTIL)


def test_nearest_rank_times_in_business_and_calendar_seconds(db: Database) -> None:
    _seed(db)
    report = _report(db)
    it, hr = report.groups
    # it, stopped clocks only (t1-t4), sorted; n=4: median = 2nd, p90 = 4th.
    #   FR b: 1800 5400 7200 9000        FR c: 1800 5400 64800 178200
    #   RES b: 14400 18000 27000 39600   RES c: 14400 93600 154800 187200
    assert _times(it) == (
        (5400, 9000),
        (5400, 178200),
        (18000, 39600),
        (93600, 187200),
    )
    # hr (t9, t12); n=2: median = 1st, p90 = 2nd.
    assert _times(hr) == ((1800, 57600), (1800, 172800), (14400, 57600), (14400, 172800))
    # All six; n=6: median = 3rd, p90 = 6th.
    #   FR b: 1800 1800 5400 7200 9000 57600      FR c: 1800 1800 5400 64800 172800 178200
    #   RES b: 14400 14400 18000 27000 39600 57600
    #   RES c: 14400 14400 93600 154800 172800 187200
    assert _times(report.total) == (
        (5400, 57600),
        (5400, 178200),
        (18000, 57600),
        (93600, 187200),
    )
    out = report.total.as_dict()
    assert out["first_response_attainment"] == pytest.approx(4 / 8)
    assert out["resolution_attainment"] == pytest.approx(5 / 7)
    assert out["rated"] == 4 and out["satisfaction"] == pytest.approx(3.25)
    json.dumps(report.as_dict())  # JSON-able as the CLI prints it


def test_percentiles_are_nearest_rank() -> None:
    # Milliseconds in, seconds out.
    assert percentiles([4000, 1000, 3000, 2000]) == {"median": 2.0, "p90": 4.0}
    assert percentiles([v * 1000 for v in range(10, 0, -1)]) == {"median": 5.0, "p90": 9.0}
    assert percentiles([v * 1000 for v in range(1, 12)]) == {"median": 6.0, "p90": 10.0}
    assert percentiles([7001]) == {"median": 7.001, "p90": 7.001}
    assert percentiles([]) == {"median": None, "p90": None}


# ------------------------------------------------------------------ other groupings


def test_by_provider_names_people_and_unassigned(db: Database) -> None:
    _seed(db)
    report = _report(db, by="provider")
    # (unassigned) t3 t6 t8 t12; Alice t1 t4 t7; bob t2 t5; Carol t9. Most tickets first.
    assert [_counts(g) for g in report.groups] == [
        # FR: t3, t12 breached; t6, t8 undecided. RES: t3, t12 met.
        ("(unassigned)", 4, 2, 2, 0, 2, 2, 0, 0, [0, 0, 0, 0, 0]),
        # FR: t1, t4 met, t7 breached. RES: t1, t4 met. t4 reopened once.
        ("Alice Example", 3, 1, 2, 2, 1, 2, 0, 1, [0, 0, 0, 1, 1]),
        # FR: t2 met, t5 breached. RES: both breached.
        ("bob@corp.example", 2, 1, 1, 1, 1, 0, 2, 0, [0, 0, 1, 0, 0]),
        ("Carol Chen", 1, 0, 1, 1, 0, 1, 0, 0, [1, 0, 0, 0, 0]),
    ]
    # Alice: FR b 1800, 5400 (n=2: median 1st, p90 2nd); RES b 14400, 27000.
    alice = report.groups[1]
    assert (alice.first_response, alice.resolution) == (
        {"median": 1800, "p90": 5400},
        {"median": 14400, "p90": 27000},
    )
    assert _counts(report.total) == ("all", 10, 4, 6, 4, 4, 5, 2, 1, [1, 0, 1, 1, 1])


def test_by_category_with_none(db: Database) -> None:
    _seed(db)
    report = _report(db, by="category")
    # (none): t3 t5 t6 t8 t12; hardware: t4 t7; network: t1 t2; payroll: t9.
    assert [_counts(g) for g in report.groups] == [
        # FR: t3 t5 t12 breached; RES: t3 t12 met, t5 breached.
        ("(none)", 5, 3, 2, 0, 3, 2, 1, 0, [0, 0, 0, 0, 0]),
        ("hardware", 2, 1, 1, 1, 1, 1, 0, 1, [0, 0, 0, 1, 0]),
        ("network", 2, 0, 2, 2, 0, 1, 1, 0, [0, 0, 1, 0, 1]),
        ("payroll", 1, 0, 1, 1, 0, 1, 0, 0, [1, 0, 0, 0, 0]),
    ]
    network = report.groups[2]
    # t1, t2: FR b 1800, 7200; c 1800, 64800.
    assert _times(network)[:2] == ((1800, 7200), (1800, 64800))


def test_by_week_uses_local_iso_weeks(db: Database) -> None:
    _seed(db)
    report = _report(db, since=None)
    # since=None: from the oldest ticket (t10, Fri 27 Feb 10:00 UTC).
    assert report.since == utc(2, 27, 10)
    report = _report(db, since=None, by="week")
    # Local weeks: 2026-W09 (23 Feb - 1 Mar) holds t10 and t11 (Sun 23:30 Berlin);
    # 2026-W10 holds t1-t9 and t12, including t7 (Sun 23:30 UTC, but Mon 00:30 in
    # Berlin). Sorted by week, not by size.
    assert [_counts(g) for g in report.groups] == [
        ("2026-W09", 2, 1, 1, 0, 2, 1, 1, 0, [0, 0, 0, 0, 0]),
        ("2026-W10", 10, 4, 6, 4, 4, 5, 2, 1, [1, 0, 1, 1, 1]),
    ]
    # W09: t10 is open since Fri 27 Feb 11:00 Berlin: hr FR (4h) due 15:00 Berlin, RES (16h)
    # due Tue 3 Mar 11:00 Berlin, both before UNTIL: breached. t11 was resolved
    # without a reply Tue 10:00 UTC: the time from Sun night is Mon 8h + Tue 2h =
    # 36000 b: FR breached, RES met.
    w09 = report.groups[0]
    assert w09.resolution == {"median": 36000, "p90": 36000}
    assert report.total.received == 12


# ------------------------------------------------------------------ scope and errors


def test_queue_filter_and_errors(db: Database) -> None:
    _seed(db)
    report = _report(db, queue="hr")
    assert report.queue == "hr"
    assert [_counts(g) for g in report.groups] == [("hr", 2, 0, 2, 1, 1, 2, 0, 0, [1, 0, 0, 0, 0])]
    assert _counts(report.total) == ("all", 2, 0, 2, 1, 1, 2, 0, 0, [1, 0, 0, 0, 0])
    # By provider within it: Alice t1 t4 t7, bob t2 t5, unassigned t3 t6 t8.
    report = _report(db, queue="it", by="provider")
    assert [(g.key, g.received) for g in report.groups] == [
        ("(unassigned)", 3),
        ("Alice Example", 3),
        ("bob@corp.example", 2),
    ]
    with pytest.raises(ReportError) as err:
        _report(db, queue="sales")
    assert "'sales'" in str(err.value) and "hr, it" in str(err.value)
    with pytest.raises(ReportError) as err:
        _report(db, by="day")
    assert "'day'" in str(err.value) and "queue, provider, category, week" in str(err.value)


def test_nothing_in_the_period(db: Database) -> None:
    _seed(db, plans=())
    report = _report(db, since=None)
    assert report.since == UNTIL  # nothing ever created: an empty period
    assert _counts(report.total) == ("all", 0, 0, 0, 0, 0, 0, 0, 0, [0, 0, 0, 0, 0])
    assert report.groups == []
    assert _times(report.total) == ((None, None),) * 4
    assert report.total.satisfaction is None
    assert report.total.as_dict()["first_response_attainment"] is None
    assert report.days == [Day(date(2026, 3, 6), 0, 0, 0)]


# ------------------------------------------------------------------ days


def test_daily_received_resolved_and_backlog_in_local_days(db: Database) -> None:
    _seed(db)
    # Local days (Berlin, UTC+1). Before Mon 00:00 Berlin: t10, t11 created, nothing
    # resolved: backlog starts at 2.
    # Mon: created t7 (Sun 23:30 UTC), t1, t2; resolved t1 -> 2 + 3 - 1 = 4
    # Tue: created t12 (Mon 23:30 UTC), t3, t9; resolved t11, t9 -> 4 + 3 - 2 = 5
    # Wed: created t4; resolved t2 (t4's first resolution was reopened) -> 5
    # Thu: created t5; resolved t12 (Wed 23:30 UTC), t4, t3 -> 5 + 1 - 3 = 3
    # Fri (to UNTIL): created t8, t6 (t13 is after UNTIL); resolved none -> 5
    expected = [
        Day(date(2026, 3, 2), 3, 1, 4),
        Day(date(2026, 3, 3), 3, 2, 5),
        Day(date(2026, 3, 4), 1, 1, 5),
        Day(date(2026, 3, 5), 1, 3, 3),
        Day(date(2026, 3, 6), 2, 0, 5),
    ]
    assert _report(db).days == expected
    assert _report(db, by="provider").days == expected  # grouping does not change days
    # One queue: hr starts with t10 and t11 in its backlog.
    assert _report(db, queue="hr").days == [
        Day(date(2026, 3, 2), 0, 0, 2),
        Day(date(2026, 3, 3), 2, 2, 2),
        Day(date(2026, 3, 4), 0, 0, 2),
        Day(date(2026, 3, 5), 0, 1, 1),
        Day(date(2026, 3, 6), 0, 0, 1),
    ]
    assert _report(db, queue="it").days == [
        Day(date(2026, 3, 2), 3, 1, 2),
        Day(date(2026, 3, 3), 1, 0, 3),
        Day(date(2026, 3, 4), 1, 1, 3),
        Day(date(2026, 3, 5), 1, 2, 2),
        Day(date(2026, 3, 6), 2, 0, 4),
    ]
    days = _report(db).as_dict()["days"]
    assert days[0] == {"day": "2026-03-02", "received": 3, "resolved": 1, "backlog": 4}


def test_days_follow_the_summer_time_change(db: Database) -> None:
    """Berlin moves to UTC+2 on Sunday 29 March 2026: local midnight moves to 22:00 UTC."""
    plans = (
        Plan("a", "it", utc(3, 28, 22, 30)),  # Sat 23:30 CET: Saturday
        Plan("b", "it", utc(3, 28, 23, 30)),  # Sun 00:30 CET: Sunday
        Plan("c", "it", utc(3, 29, 21, 30), [(utc(3, 29, 22, 30), "resolved")]),
        # c: created Sun 23:30 CEST (Sunday); resolved Mon 00:30 CEST (Monday)
        Plan("d", "it", utc(3, 29, 22, 30)),  # Mon 00:30 CEST: Monday
    )
    _seed(db, plans=plans)
    report = _report(db, since=utc(3, 27, 23), until=utc(3, 30, 12))  # from Sat 00:00 CET
    assert report.days == [
        Day(date(2026, 3, 28), 1, 0, 1),
        Day(date(2026, 3, 29), 2, 0, 3),
        Day(date(2026, 3, 30), 1, 1, 3),
    ]
    assert [
        (g.key, g.received) for g in _report(db, since=None, until=utc(3, 30, 12), by="week").groups
    ] == [
        ("2026-W13", 3),  # a, b, c: Mon 23 - Sun 29 March
        ("2026-W14", 1),  # d
    ]


def test_a_period_starting_in_the_future_is_empty_or_refused(sqlite_db: Database) -> None:
    db = sqlite_db
    _seed(db)
    try:
        report = _report(db, since=utc(3, 20, 0))
    except ReportError:
        return
    assert report.total.received == 0 and report.groups == []


# ------------------------------------------------------------------ parse_since


NOW = utc(3, 10, 12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", utc(2, 8, 12)),  # 10 March - 30 days (February has 28)
        (" 30D ", utc(2, 8, 12)),
        ("12w", datetime(2025, 12, 16, 12, tzinfo=UTC)),  # - 84 days
        ("6m", datetime(2025, 9, 11, 12, tzinfo=UTC)),  # months of 30 days: - 180 days
        ("1y", datetime(2025, 3, 10, 12, tzinfo=UTC)),  # - 365 days
        ("2026-01-01", datetime(2025, 12, 31, 23, tzinfo=UTC)),  # midnight CET
        ("2026-07-01", utc(6, 30, 22)),  # midnight CEST
        ("all", None),
        ("ALL", None),
    ],
)
def test_parse_since_forms(text: str, expected: datetime | None) -> None:
    got = parse_since(text, NOW, BERLIN)
    assert got == expected
    if got is not None:
        assert got.utcoffset() is not None  # aware, comparable with ticket times


@pytest.mark.parametrize("text", ["yesterday", "30", "d", "-5d", "30 days", "2026-13-01", ""])
def test_parse_since_refuses_other_text(text: str) -> None:
    with pytest.raises(ReportError) as err:
        parse_since(text, NOW, BERLIN)
    message = str(err.value)
    assert message.startswith("--since ") and "30d" in message and "all" in message


def test_parse_since_refuses_a_period_before_year_one() -> None:
    with pytest.raises(ReportError):
        parse_since("3000y", NOW, BERLIN)


@given(st.lists(st.integers(0, 10**11), max_size=60))
def test_percentiles_match_a_sorted_nearest_rank(ms: list[int]) -> None:
    ordered = sorted(ms)
    want: dict[str, float | None] = {"median": None, "p90": None}
    if ordered:
        n = len(ordered)
        want = {
            "median": ordered[-(-n // 2) - 1] / 1000,  # ceil(n/2)-th
            "p90": ordered[-(-9 * n // 10) - 1] / 1000,  # ceil(9n/10)-th
        }
    assert percentiles(ms) == want
