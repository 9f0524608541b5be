"""Business time: working hours per weekday in a timezone, minus public holidays.

``Calendar.business_seconds(a, b)`` is the working time between two instants. It is
answered in O(1) after the first call for a day: each day's opening hours become
UTC intervals (so a DST change moves them correctly), and a running total of working
seconds per day since an origin turns any span into a subtraction.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RULE = re.compile(
    r"^\s*(?P<days>[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*)\s+"
    r"(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s*$"
)


class CalendarError(ValueError):
    """Opening hours or holidays that cannot be understood; the message says how to fix it."""


def _clock(text: str) -> time:
    hours, minutes = (int(x) for x in text.split(":"))
    if hours == 24 and minutes == 0:
        return time.max
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise CalendarError(f"{text!r} is not a time of day (use 00:00 to 24:00)")
    return time(hours, minutes)


def _days(spec: str) -> list[int]:
    found: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise CalendarError(f"{part!r}: days are {', '.join(DAYS)} (a range: mon-fri)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        found += list(range(a, b + 1)) if a <= b else [*range(a, 7), *range(0, b + 1)]
    return found


def parse_hours(rules: Iterable[str]) -> dict[int, list[tuple[time, time]]]:
    """``["mon-fri 09:00-17:00", "sat 10:00-13:00"]`` as weekday -> opening intervals."""
    week: dict[int, list[tuple[time, time]]] = {d: [] for d in range(7)}
    for rule in rules:
        m = _RULE.match(rule.lower())
        if not m:
            raise CalendarError(f'{rule!r}: write opening hours like "mon-fri 09:00-17:00"')
        start, end = _clock(m["start"]), _clock(m["end"])
        if end <= start:
            raise CalendarError(f"{rule!r}: the end comes before the start")
        for day in _days(m["days"]):
            week[day].append((start, end))
    for spans in week.values():
        spans.sort()
        for (_, end1), (start2, _) in itertools.pairwise(spans):
            if start2 < end1:
                raise CalendarError("opening hours of one day overlap")
    return week


@dataclass
class Calendar:
    """Working hours in ``timezone``, closed on ``holidays`` (dates) and on ``closed`` dates."""

    timezone: str = "UTC"
    hours: tuple[str, ...] = ("mon-fri 09:00-17:00",)
    country: str | None = None
    subdivision: str | None = None
    closed: tuple[date, ...] = ()
    _tz: ZoneInfo = field(init=False, repr=False)
    _week: dict[int, list[tuple[time, time]]] = field(init=False, repr=False)
    _holidays: object = field(init=False, repr=False)
    _origin: date = field(init=False, repr=False)
    _cum: list[float] = field(init=False, repr=False)  # working seconds before origin + i

    def __post_init__(self) -> None:
        try:
            self._tz = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CalendarError(
                f"unknown timezone {self.timezone!r} (e.g. Europe/Berlin)"
            ) from None
        self._week = parse_hours(self.hours)
        if not any(self._week.values()):
            raise CalendarError("no opening hours at all: business time would never pass")
        self._holidays = None
        if self.country:
            import holidays

            try:
                self._holidays = holidays.country_holidays(self.country, subdiv=self.subdivision)
            except NotImplementedError:
                raise CalendarError(f"no public holidays known for {self.country!r}") from None
        self._origin = date(2000, 1, 3)
        self._cum = [0.0]

    # ------------------------------------------------------------------ days

    def is_closed(self, day: date) -> bool:
        """A public holiday or an explicitly closed date."""
        if day in self.closed:
            return True
        return self._holidays is not None and day in self._holidays  # type: ignore[operator]

    def opening(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's working intervals as UTC instants (empty when closed)."""
        if self.is_closed(day):
            return []
        spans = []
        for start, end in self._week[day.weekday()]:
            a = datetime.combine(day, start, self._tz).astimezone(UTC)
            b = (
                datetime.combine(day + timedelta(days=1), time(0), self._tz)
                if end == time.max
                else datetime.combine(day, end, self._tz)
            ).astimezone(UTC)
            spans.append((a, b))
        return spans

    def _day_seconds(self, day: date) -> float:
        return sum((b - a).total_seconds() for a, b in self.opening(day))

    def _cumulative(self, day: date) -> float:
        """Working seconds from the origin to the start of ``day``."""
        index = (day - self._origin).days
        if index < 0:
            # Before the origin: count backwards (rare: only for very old data).
            back = range(1, -index + 1)
            return -sum(self._day_seconds(self._origin - timedelta(days=i)) for i in back)
        while len(self._cum) <= index:
            last = self._origin + timedelta(days=len(self._cum) - 1)
            self._cum.append(self._cum[-1] + self._day_seconds(last))
        return self._cum[index]

    # ------------------------------------------------------------------ instants

    def _position(self, at: datetime) -> float:
        """Working seconds from the origin to ``at``."""
        at = at.astimezone(UTC)
        day = at.astimezone(self._tz).date()
        within = 0.0
        for a, b in self.opening(day):
            if at <= a:
                break
            within += (min(at, b) - a).total_seconds()
        return self._cumulative(day) + within

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Working time between two instants (0 when ``end`` is not after ``start``)."""
        if end <= start:
            return 0.0
        return self._position(end) - self._position(start)

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant when ``seconds`` of working time have passed after ``start``."""
        if seconds <= 0:
            return start
        target = self._position(start) + seconds
        day = start.astimezone(self._tz).date()
        for _ in range(366 * 10):
            if self._cumulative(day + timedelta(days=1)) >= target:
                left = target - self._cumulative(day)
                for a, b in self.opening(day):
                    span = (b - a).total_seconds()
                    if left <= span:
                        return a + timedelta(seconds=left)
                    left -= span
            day += timedelta(days=1)
        raise CalendarError("no working time within ten years: check the opening hours")

    @property
    def tz(self) -> ZoneInfo:
        """The calendar's timezone (days in reports are its days)."""
        return self._tz

    @property
    def day_length(self) -> float:
        """Seconds in an average working day (what "1d" of business time means)."""
        week = [sum(_seconds(b) - _seconds(a) for a, b in self._week[d]) for d in range(7)]
        working = [w for w in week if w]
        return sum(working) / len(working)


def _seconds(t: time) -> int:
    return 86_400 if t == time.max else t.hour * 3600 + t.minute * 60
