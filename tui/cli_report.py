"""``deskq report``: the team's numbers as a table, JSON or CSV (the reports screen's figures)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from tui.cli import EXIT_OK, EXIT_USAGE, UserError, _workspace

if TYPE_CHECKING:
    from store.report import Figures, Report

# store.report.BY (a test keeps them equal): the database layer is imported only by
# commands that use it, so every command starts fast (poll starts its parse worker first).
BY = ("queue", "provider", "category", "week")

SPARK = "▁▂▃▄▅▆▇█"


def duration(seconds: float | None) -> str:
    """45m, 3h 10m, 52h (hours of business time are not folded into days)."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours < 100 else f"{hours}h"


def percent(value: float | None) -> str:
    """0.934 as 93.4%."""
    return "-" if value is None else f"{100 * value:.1f}%"


def rating(f: Figures) -> str:
    """Mean rating with how many there were: 4.2 (17)."""
    return "-" if f.satisfaction is None else f"{f.satisfaction:.1f} ({f.rated})"


COLUMNS = (
    "received",
    "open",
    "resolved",
    "1st resp. median",
    "1st resp. p90",
    "resolution median",
    "resolution p90",
    "1st resp. SLA",
    "resolution SLA",
    "reopens",
    "rating",
)


def cells(f: Figures) -> list[str]:
    """One group's figures as the table shows them (business times)."""
    return [
        str(f.received),
        str(f.open),
        str(f.resolved),
        duration(f.first_response["median"]),
        duration(f.first_response["p90"]),
        duration(f.resolution["median"]),
        duration(f.resolution["p90"]),
        percent(f.attainment(f.first_response_met, f.first_response_breached)),
        percent(f.attainment(f.resolution_met, f.resolution_breached)),
        str(f.reopens),
        rating(f),
    ]


def sparkline(values: list[int]) -> str:
    """Values as ▁▂▃▄▅▆▇█ (scaled to the largest)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(
        SPARK[min(int(v / top * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)] for v in values
    )


def title(report: Report) -> str:
    """What the report covers, in one line."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(report.timezone)
    since = report.since.astimezone(tz).date().isoformat()
    until = report.until.astimezone(tz).date().isoformat()
    scope = f"queue {report.queue}" if report.queue else "all queues"
    return f"tickets created {since} to {until}, {scope}, by {report.by} (times in business hours)"


def print_table(report: Report, out: IO[str]) -> None:
    """Groups and the total as aligned columns, then the daily series as sparklines."""
    from tui.safe_text import one_line

    out.write(title(report) + "\n\n")
    rows = [[one_line(g.key, 30), *cells(g)] for g in report.groups]
    rows.append(["total", *cells(report.total)])
    header = [report.by, *COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for n, row in enumerate([header, *rows]):
        if n == len(rows):  # before the total
            out.write("  ".join("-" * w for w in widths) + "\n")
        first = row[0].ljust(widths[0])
        out.write(
            "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
            + "\n"
        )
    days = report.days[-90:]
    if days:
        out.write(
            f"\nlast {len(days)} days ({days[0].day} to {days[-1].day}, {report.timezone}):\n"
        )
        out.write(f"  received  {sparkline([d.received for d in days])}  ")
        out.write(f"max {max(d.received for d in days)}/day\n")
        out.write(f"  resolved  {sparkline([d.resolved for d in days])}  ")
        out.write(f"max {max(d.resolved for d in days)}/day\n")
        out.write(f"  backlog   {sparkline([d.backlog for d in days])}  ")
        out.write(f"now {days[-1].backlog}\n")


CSV_FIELDS = (
    "group",
    "received",
    "open",
    "resolved",
    "first_response_median_s",
    "first_response_p90_s",
    "first_response_calendar_median_s",
    "first_response_calendar_p90_s",
    "resolution_median_s",
    "resolution_p90_s",
    "resolution_calendar_median_s",
    "resolution_calendar_p90_s",
    "first_response_met",
    "first_response_breached",
    "resolution_met",
    "resolution_breached",
    "reopens",
    "rated",
    "satisfaction",
)


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)


def csv_row(f: Figures) -> list[Any]:
    """One group as CSV values (whole seconds, counts)."""
    times = [
        _whole(t[p])
        for t in (
            f.first_response,
            f.first_response_calendar,
            f.resolution,
            f.resolution_calendar,
        )
        for p in ("median", "p90")
    ]
    return [
        f.key,
        f.received,
        f.open,
        f.resolved,
        *times,
        f.first_response_met,
        f.first_response_breached,
        f.resolution_met,
        f.resolution_breached,
        f.reopens,
        f.rated,
        None if f.satisfaction is None else round(f.satisfaction, 2),
    ]


def make_report(ws: Any, since: str, queue: str | None, by: str, now: datetime) -> Report:
    """The report both the command and the reports screen show."""
    from store import access
    from store.report import for_settings

    with ws.db.session() as s:
        scope = access.scope_for(s, ws.settings.me)
        return for_settings(s, ws.settings, since, now=now, queue=queue, by=by, queue_ids=scope)


def cmd_report(args: argparse.Namespace) -> int:
    """Volume, backlog, response and resolution times, SLA attainment, satisfaction."""
    from store.report import ReportError

    ws = _workspace(args)
    try:
        report = make_report(ws, args.since, args.queue, args.by, datetime.now(UTC))
    except ReportError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    finally:
        ws.close()
    if args.format == "json":
        print(json.dumps(report.as_dict(), indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(CSV_FIELDS)
        for f in [*report.groups, report.total]:
            writer.writerow(csv_row(f))
    else:
        print_table(report, sys.stdout)
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Register ``report`` on the main parser."""
    p = sub.add_parser("report", help="the team's numbers: volume, times, SLA, satisfaction")
    p.add_argument(
        "--since", default="30d", help="period: 30d, 12w, 6m, 1y, 2026-01-01 or all (default 30d)"
    )
    p.add_argument("--queue", help="one queue's tickets only")
    p.add_argument("--by", choices=BY, default="queue", help="group by (default queue)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=cmd_report)
