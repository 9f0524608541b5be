"""Business calendars and SLA clocks: hand-computed cases and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.calendar import Calendar, CalendarError
from store.sla import Policy, clocks_for, parse_duration

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600.0


def b(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


CAL = Calendar("Europe/Berlin", ("mon-fri 09:00-17:00",), "DE", "BY", (date(2026, 12, 24),))


# ------------------------------------------------------------------ calendar, by hand


def test_weekend_is_skipped() -> None:
    assert CAL.business_seconds(b(2026, 11, 20, 16), b(2026, 11, 23, 10)) == 2 * H  # Fri -> Mon


def test_holidays_and_explicit_closed_dates() -> None:
    # Wed 23 Dec 16:00 -> Mon 28 Dec 10:00: 1 h, then 24 (closed), 25, 26 (holidays), 1 h
    assert CAL.business_seconds(b(2026, 12, 23, 16), b(2026, 12, 28, 10)) == 2 * H
    assert CAL.is_closed(date(2026, 12, 25)) and CAL.is_closed(date(2026, 12, 24))
    assert CAL.is_closed(date(2026, 1, 6))  # Epiphany: a holiday in Bavaria (BY) only
    assert not Calendar("Europe/Berlin", country="DE", subdivision="BE").is_closed(date(2026, 1, 6))


def test_dst_change_in_the_calendars_timezone() -> None:
    around_the_clock = Calendar("Europe/Berlin", ("mon-sun 00:00-24:00",))
    # Berlin springs forward on 29 March 2026 and falls back on 25 October 2026
    assert around_the_clock.business_seconds(b(2026, 3, 28, 12), b(2026, 3, 29, 12)) == 23 * H
    assert around_the_clock.business_seconds(b(2026, 10, 24, 12), b(2026, 10, 25, 12)) == 25 * H
    # working hours stay 09:00-17:00 local on both sides of the change
    assert CAL.business_seconds(b(2026, 3, 27, 16), b(2026, 3, 30, 10)) == 2 * H


def test_add_lands_in_working_hours() -> None:
    assert CAL.add(b(2026, 11, 20, 16), 2 * H) == b(2026, 11, 23, 10)
    assert CAL.add(b(2026, 11, 21, 12), 1 * H) == b(2026, 11, 23, 10)  # from a Saturday


def test_bad_calendars_say_what_to_write() -> None:
    with pytest.raises(CalendarError, match="mon-fri 09:00-17:00"):
        Calendar(hours=("weekdays 9-5",))
    with pytest.raises(CalendarError, match="timezone"):
        Calendar(timezone="Mars/Olympus")
    with pytest.raises(CalendarError, match="end comes before"):
        Calendar(hours=("mon 17:00-09:00",))


def test_durations() -> None:
    assert parse_duration("30m", 8 * H) == 1800 and parse_duration("2d", 8 * H) == 16 * H
    with pytest.raises(ValueError, match="30m, 4h or 2d"):
        parse_duration("soon", 8 * H)


# ------------------------------------------------------------------ clocks, by hand

POLICY = Policy(first_response=4 * H, resolution=16 * H)


def test_first_response_and_resolution_met() -> None:
    events = [
        (b(2026, 11, 23, 9), "created", {"status": "new"}),
        (b(2026, 11, 23, 11), "sent", {"kind": "reply"}),
        (b(2026, 11, 24, 12), "status", {"from": "open", "to": "resolved"}),
    ]
    r = clocks_for(CAL, events).report(POLICY, b(2026, 11, 30, 9))
    assert (r.first_response.state, r.first_response.used) == ("met", 2 * H)
    assert (r.resolution.state, r.resolution.used) == ("met", 11 * H)
    assert r.first_response_calendar == 2 * H and r.resolution_calendar == 27 * H


def test_an_automatic_acknowledgement_is_not_a_first_response() -> None:
    events = [
        (b(2026, 11, 23, 9), "created", {}),
        (b(2026, 11, 23, 9, 1), "sent", {"kind": "auto-ack"}),
    ]
    r = clocks_for(CAL, events).report(POLICY, b(2026, 11, 23, 14))
    assert r.first_response.state == "breached" and r.first_response.left == -1 * H


def test_a_pause_spanning_a_night_stops_the_clock() -> None:
    events = [
        (b(2026, 11, 23, 15), "created", {}),
        (b(2026, 11, 23, 16), "sent", {"kind": "reply"}),
        (b(2026, 11, 23, 16), "status", {"from": "new", "to": "pending"}),
        (b(2026, 11, 24, 11), "status", {"from": "pending", "to": "open"}),  # requester answered
    ]
    r = clocks_for(CAL, events).report(POLICY, b(2026, 11, 24, 12))
    assert r.resolution.state == "running" and r.resolution.used == 2 * H  # 15-16, 11-12
    assert r.waiting == 19 * H  # calendar time on hold, night included
    assert r.resolution.due == CAL.add(b(2026, 11, 24, 12), 14 * H)


def test_paused_clock_does_not_move() -> None:
    events = [
        (b(2026, 11, 23, 9), "created", {}),
        (b(2026, 11, 23, 10), "status", {"to": "on-hold"}),
    ]
    clocks = clocks_for(CAL, events)
    a, later = (
        clocks.report(POLICY, b(2026, 11, 23, 11)),
        clocks.report(POLICY, b(2026, 11, 26, 11)),
    )
    assert a.resolution == later.resolution and a.resolution.state == "paused"


def test_reopening_after_resolution_goes_on_from_where_it_stopped() -> None:
    events = [
        (b(2026, 11, 23, 9), "created", {}),
        (b(2026, 11, 23, 13), "status", {"from": "new", "to": "resolved"}),
        (b(2026, 11, 25, 9), "status", {"from": "resolved", "to": "open"}),
        (b(2026, 11, 25, 11), "status", {"from": "open", "to": "closed"}),
    ]
    r = clocks_for(CAL, events).report(POLICY, b(2026, 11, 30, 9))
    assert r.reopens == 1 and r.resolution.used == 6 * H and r.resolution.state == "met"
    assert r.first_response.state == "met"  # resolved without a reply: stopped there


def test_a_changed_policy_recomputes_history() -> None:
    events = [
        (b(2026, 11, 23, 9), "created", {}),
        (b(2026, 11, 23, 15), "status", {"from": "new", "to": "resolved"}),
    ]
    clocks = clocks_for(CAL, events)
    assert clocks.report(Policy(resolution=8 * H), b(2026, 12, 1, 9)).resolution.state == "met"
    assert clocks.report(Policy(resolution=4 * H), b(2026, 12, 1, 9)).resolution.state == "breached"


# ------------------------------------------------------------------ properties

STATUSES = ["new", "open", "pending", "on-hold", "resolved", "closed"]
instants = st.integers(min_value=0, max_value=60 * 24 * 40).map(
    lambda m: datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=m)
)


@st.composite
def logs(draw: st.DrawFn) -> list[tuple[datetime, str, dict[str, str]]]:
    times = sorted(draw(st.lists(instants, min_size=1, max_size=12)))
    events: list[tuple[datetime, str, dict[str, str]]] = [(times[0], "created", {})]
    for at in times[1:]:
        if draw(st.booleans()):
            events.append((at, "status", {"to": draw(st.sampled_from(STATUSES))}))
        else:
            events.append((at, "sent", {"kind": draw(st.sampled_from(["reply", "auto-ack"]))}))
    return events


@settings(max_examples=150, deadline=None)
@given(st.tuples(instants, instants))
def test_business_time_never_exceeds_calendar_time(pair: tuple[datetime, datetime]) -> None:
    a, z = sorted(pair)
    assert 0 <= CAL.business_seconds(a, z) <= (z - a).total_seconds()


@settings(max_examples=150, deadline=None)
@given(logs(), st.data())
def test_replay_in_any_chunking_gives_the_same_clocks(events: list, data: st.DataObject) -> None:  # type: ignore[type-arg]
    now = events[-1][0] + timedelta(days=3)
    whole = clocks_for(CAL, events).report(POLICY, now)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    clocks = clocks_for(CAL, [])
    start = 0
    for cut in [*cuts, len(events)]:
        for at, kind, payload in events[start:cut]:
            clocks.apply(at, kind, payload)
        start = max(start, cut)
    assert clocks.report(POLICY, now) == whole


@settings(max_examples=150, deadline=None)
@given(logs(), st.integers(0, 11), instants)
def test_pausing_never_increases_the_time_consumed(
    events: list, index: int, extra: datetime
) -> None:  # type: ignore[type-arg]
    now = max(events[-1][0], extra) + timedelta(days=1)
    plain = clocks_for(CAL, events).report(POLICY, now)
    at = events[min(index, len(events) - 1)][0]
    paused = sorted([*events, (at, "status", {"to": "pending"})], key=lambda e: e[0])
    paused = [e for e in paused if e[1] == "created"][:1] + [e for e in paused if e[1] != "created"]
    with_pause = clocks_for(CAL, paused).report(POLICY, now)
    assert with_pause.resolution.used <= plain.resolution.used + 1e-6
