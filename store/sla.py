"""SLA clocks, computed from a ticket's event log (never stored: a changed policy recomputes).

A ticket's clocks run in business time (:class:`store.calendar.Calendar`) from its
``created`` event. They pause while the ticket waits on the requester or a third party
(``pending``, ``on-hold``) and resume when it is active again. The first-response clock
stops at the first reply actually delivered (the ``sent`` event of a reply); the
resolution clock stops at ``resolved`` or ``closed`` and, if the ticket is reopened,
goes on from where it stopped. :class:`Clocks` takes events one at a time, so replaying
a log in any number of chunks gives the same figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from store.calendar import Calendar

PAUSED = {"pending", "on-hold"}
DONE = {"resolved", "closed"}
AT_RISK = 0.25  # under a quarter of the target left
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhd])\s*$")


def parse_duration(text: str, day_length: float) -> float:
    """``"30m"``, ``"4h"``, ``"2d"`` (working days) as seconds of business time."""
    m = _DURATION.match(text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30m, 4h or 2d (working days)")
    value, unit = float(m[1]), m[2]
    return value * {"m": 60.0, "h": 3600.0, "d": day_length}[unit]


@dataclass(frozen=True)
class Policy:
    """Targets in seconds of business time (None: no target)."""

    first_response: float | None = None
    resolution: float | None = None


@dataclass(frozen=True)
class TargetState:
    """One target of one ticket."""

    state: str  # none | met | breached (stopped late, or still open and late) | running | paused
    used: float  # business seconds consumed
    target: float | None
    left: float | None  # business seconds left (negative once breached)
    due: datetime | None  # when it breaches if nothing changes (running only)
    open: bool = False  # the clock has not stopped (no reply yet / not resolved)

    @property
    def at_risk(self) -> bool:
        """Running or paused with less than a quarter of the target left (not yet breached)."""
        return (
            self.state in ("running", "paused")
            and self.target is not None
            and self.left is not None
            and 0 <= self.left < AT_RISK * self.target
        )

    @property
    def breached(self) -> bool:
        """Over the target, whether the clock still runs or not."""
        return self.left is not None and self.left < 0


@dataclass(frozen=True)
class Report:
    """Everything recorded for a ticket's times."""

    first_response: TargetState
    resolution: TargetState
    first_response_calendar: float | None  # seconds from created to the first reply sent
    resolution_calendar: float | None  # seconds from created to (last) resolution
    waiting: float  # calendar seconds spent pending or on hold
    reopens: int


@dataclass
class Clocks:
    """A ticket's clocks, fed its events in order (see module docstring)."""

    calendar: Calendar
    created: datetime | None = None
    status: str = "new"
    run_since: datetime | None = None  # start of the current running stretch
    used: float = 0.0  # business seconds of finished running stretches
    waiting: float = 0.0
    waiting_since: datetime | None = None
    first_reply: datetime | None = None
    first_reply_used: float | None = None
    resolved: datetime | None = None
    resolved_used: float | None = None
    first_done_used: float | None = None  # business time at the first resolution
    first_done: datetime | None = None  # when it was first resolved
    reopens: int = 0

    def _stop(self, at: datetime) -> None:
        if self.run_since is not None:
            self.used += self.calendar.business_seconds(self.run_since, at)
            self.run_since = None

    def _used_at(self, at: datetime) -> float:
        running = self.calendar.business_seconds(self.run_since, at) if self.run_since else 0.0
        return self.used + running

    def apply(self, at: datetime, kind: str, data: dict[str, Any]) -> None:
        """One event of the ticket (in log order)."""
        if kind == "created":
            self.created, self.run_since, self.status = at, at, str(data.get("status", "new"))
            return
        if self.created is None:
            return  # events of a ticket whose creation is not in this log
        if kind == "sent" and data.get("kind", "reply") == "reply" and self.first_reply is None:
            self.first_reply, self.first_reply_used = at, self._used_at(at)
        elif kind == "status" and "to" in data:
            self._status(at, str(data["to"]))

    def _status(self, at: datetime, new: str) -> None:
        old, self.status = self.status, new
        if old in PAUSED and self.waiting_since is not None:
            self.waiting += (at - self.waiting_since).total_seconds()
            self.waiting_since = None
        if new in PAUSED or new in DONE:
            self._stop(at)
        if new in PAUSED:
            self.waiting_since = at
        if new in DONE and old not in DONE:
            self.resolved, self.resolved_used = at, self.used
            if self.first_done_used is None:
                self.first_done, self.first_done_used = at, self.used
        elif new not in DONE and new not in PAUSED:
            if old in DONE:
                self.reopens += 1
                self.resolved = self.resolved_used = None
            if self.run_since is None:
                self.run_since = at

    def first_response_stop(self) -> float | None:
        """Business seconds at which the first-response clock stopped (None: still open).

        Resolved without a reply (solved on the phone, say) stops it too.
        """
        stops = [u for u in (self.first_reply_used, self.first_done_used) if u is not None]
        return min(stops) if stops else None

    def first_response_at(self) -> datetime | None:
        """When the first-response clock stopped (first reply or first resolution)."""
        stops = [t for t in (self.first_reply, self.first_done) if t is not None]
        return min(stops) if stops else None

    def due(self, target: float | None, stopped: float | None) -> datetime | None:
        """When a running target breaches (in the past once breached).

        None while paused within the target, or when there is no target or it stopped;
        a target missed before the pause keeps the pause's start, so it stays listed.
        """
        if target is None or stopped is not None:
            return None
        left = target - self.used
        if self.run_since is None:  # paused: only a target already missed has a time
            return self.waiting_since if left < 0 else None
        return self.calendar.add(self.run_since, left) if left > 0 else self.run_since

    def to_state(self) -> dict[str, Any]:
        """The clocks as JSON-able values (times as epoch seconds)."""
        out: dict[str, Any] = {}
        for name in _STATE_FIELDS:
            value = getattr(self, name)
            out[name] = value.timestamp() if isinstance(value, datetime) else value
        return out

    @classmethod
    def from_state(cls, calendar: Calendar, state: dict[str, Any]) -> Clocks:
        """Clocks saved by :meth:`to_state`."""
        clocks = cls(calendar)
        for name in _STATE_FIELDS:
            value = state.get(name)
            if name in _TIME_FIELDS and value is not None:
                value = datetime.fromtimestamp(value, UTC)
            if value is not None:
                setattr(clocks, name, value)
        return clocks

    def report(self, policy: Policy, now: datetime) -> Report:
        """The clocks as of ``now`` against ``policy``."""
        used_now = self._used_at(now)
        paused = self.status in PAUSED
        first_stop = self.first_response_stop()
        first = _target(policy.first_response, first_stop, used_now, paused, self.calendar, now)
        first_at = self.first_response_at()
        resolution = _target(
            policy.resolution, self.resolved_used, used_now, paused, self.calendar, now
        )
        waiting = self.waiting
        if self.waiting_since is not None:
            waiting += (now - self.waiting_since).total_seconds()
        created = self.created
        return Report(
            first_response=first,
            resolution=resolution,
            first_response_calendar=(first_at - created).total_seconds()
            if created and first_at
            else None,
            resolution_calendar=(self.resolved - created).total_seconds()
            if created and self.resolved
            else None,
            waiting=waiting,
            reopens=self.reopens,
        )


def _target(
    target: float | None,
    stopped_at: float | None,
    used_now: float,
    paused: bool,
    calendar: Calendar,
    now: datetime,
) -> TargetState:
    if stopped_at is not None:
        left = None if target is None else target - stopped_at
        state = "none" if target is None else ("met" if stopped_at <= target else "breached")
        return TargetState(state, stopped_at, target, left, None)
    if target is None:
        return TargetState("none", used_now, None, None, None, open=True)
    left = target - used_now
    if left < 0:  # still open, already late
        return TargetState("breached", used_now, target, left, None, open=True)
    due = None if paused else calendar.add(now, left)
    return TargetState("paused" if paused else "running", used_now, target, left, due, open=True)


def clocks_for(calendar: Calendar, events: list[tuple[datetime, str, dict[str, Any]]]) -> Clocks:
    """Replay a ticket's events (oldest first)."""
    clocks = Clocks(calendar)
    for at, kind, data in events:
        clocks.apply(at, kind, data)
    return clocks


SLA_KINDS = ("created", "status", "sent")
_TIME_FIELDS = {"created", "run_since", "waiting_since", "first_reply", "resolved", "first_done"}
_STATE_FIELDS = (
    *sorted(_TIME_FIELDS),
    "status",
    "used",
    "waiting",
    "first_reply_used",
    "resolved_used",
    "first_done_used",
    "reopens",
)


def reports(
    session: Any,
    settings: Any,
    tickets: list[tuple[int, str, str]],
    now: datetime,
    calendar: Calendar | None = None,
) -> dict[int, Report]:
    """Clocks of ``tickets`` ((id, queue key, priority)) as of ``now``, from their events."""
    from sqlalchemy import select

    from store.models import Event

    calendar = calendar or settings.business_calendar()
    logs: dict[int, list[tuple[datetime, str, dict[str, Any]]]] = {t[0]: [] for t in tickets}
    ids = list(logs)
    for start in range(0, len(ids), 500):
        # Filtering on kind in SQL would lead the planner to the kind index (millions of
        # rows); a ticket has few events, so take them all by ticket and filter here.
        rows = session.execute(
            select(Event.ticket_id, Event.at, Event.kind, Event.data)
            .where(Event.ticket_id.in_(ids[start : start + 500]))
            .order_by(Event.ticket_id, Event.id)
        )
        for tid, at, kind, data in rows:
            if kind in SLA_KINDS:
                logs[tid].append((at, kind, data or {}))
    day = calendar.day_length
    return {
        tid: clocks_for(calendar, logs[tid]).report(settings.sla_policy(queue, prio, day), now)
        for tid, queue, prio in tickets
    }


def nearest(report: Report) -> TargetState | None:
    """The open target that matters now: the one with the least time left."""
    live = [t for t in (report.first_response, report.resolution) if t.open and t.left is not None]
    return min(live, key=lambda t: t.left or 0.0) if live else None
