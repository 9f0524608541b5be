"""``deskq report`` run as a user would, on a demo workspace with a calendar and SLA targets.

The demo's tickets are made relative to today, so exact figures are checked in
tests/store/test_report.py; here the command's output must be well formed, add up,
and equal what :func:`store.report.build` gives in-process for the same period.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from store.config import load_settings
from store.report import build
from store.workspace import open_workspace
from tests.cli.test_cli import assert_user_error, demo_workspace, run
from tests.support import modules_loaded_by

BERLIN = ZoneInfo("Europe/Berlin")
EXTRA = """
[calendar]
timezone = "Europe/Berlin"
hours = ["mon-fri 09:00-17:00"]

[[sla]]
first_response = "4h"
resolution = "2d"
"""
COUNTS = ("received", "open", "resolved")
DECIDED = ("first_response_met", "first_response_breached", "resolution_met")
SPARK = set("▁▂▃▄▅▆▇█")


@dataclass
class Demo:
    env: dict[str, str]
    root: Path
    cache: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run deskq once per distinct command line (nothing writes to the demo after)."""
        if args not in self.cache:
            self.cache[args] = run(self.env, *args)
        return self.cache[args]

    def json(self, *args: str) -> Any:
        result = self.run("report", "--format", "json", *args)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    env, root = demo_workspace(tmp_path_factory.mktemp("report"), EXTRA)
    return Demo(env, root)


def test_table_has_header_groups_total_and_sparklines(demo: Demo) -> None:
    result = demo.run("report", "--since", "all")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    data = demo.json("--since", "all")
    assert lines[0].startswith("tickets created ") and "all queues, by queue" in lines[0]
    assert lines[0].endswith("(times in business hours)")
    assert re.split(r"\s{2,}", lines[2].strip()) == [
        "queue",
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
    ]
    # One line per group, a rule, then the total.
    n = len(data["groups"])
    assert n >= 2
    assert [line.split()[0] for line in lines[3 : 3 + n]] == [g["key"] for g in data["groups"]]
    assert set(lines[3 + n].replace(" ", "")) == {"-"}
    total = lines[4 + n].split()
    assert total[0] == "total"
    assert [int(x) for x in total[1:4]] == [data["total"][k] for k in COUNTS]
    mean, rated = data["total"]["satisfaction"], data["total"]["rated"]
    assert lines[4 + n].endswith("-" if mean is None else f"{mean:.1f} ({rated})")
    # The daily series: at most 90 days, one character per day.
    days = data["days"][-90:]
    assert lines[5 + n] == ""
    assert lines[6 + n] == (
        f"last {len(days)} days ({days[0]['day']} to {days[-1]['day']}, Europe/Berlin):"
    )
    for line, name in zip(lines[7 + n : 10 + n], ("received", "resolved", "backlog"), strict=True):
        label, spark, *rest = line.split()
        assert label == name and len(spark) == len(days) and set(spark) <= SPARK
        if name == "backlog":
            assert rest == ["now", str(days[-1]["backlog"])]
        else:
            assert rest == ["max", f"{max(d[name] for d in days)}/day"]
    assert len(lines) == 10 + n


@pytest.mark.parametrize("by", ["queue", "provider", "category", "week"])
def test_json_total_is_the_sum_of_its_groups(demo: Demo, by: str) -> None:
    data = demo.json("--since", "all", "--by", by)
    assert data["by"] == by and data["timezone"] == "Europe/Berlin" and data["queue"] is None
    groups, total = data["groups"], data["total"]
    assert total["key"] == "all" and total["received"] > 0
    for key in (*COUNTS, *DECIDED, "resolution_breached", "reopens"):
        assert total[key] == sum(g[key] for g in groups), key
    assert total["ratings"] == [sum(g["ratings"][i] for g in groups) for i in range(5)]
    assert total["received"] == total["open"] + total["resolved"]
    # The SLA targets of the config are applied (demo tickets are days old).
    assert sum(total[k] for k in DECIDED) > 0
    keys = [g["key"] for g in groups]
    assert len(keys) == len(set(keys))
    if by == "queue":
        assert set(keys) == {"it", "hr", "facilities"}
    elif by == "provider":
        assert set(keys) <= {"(unassigned)", "Alex Provider", "Sam Provider", "Kim Provider"}
        assert "(unassigned)" in keys and len(keys) >= 3
    elif by == "category":
        assert "(none)" in keys and len(keys) >= 3
    else:
        assert all(re.fullmatch(r"\d{4}-W\d{2}", k) for k in keys) and keys == sorted(keys)
    if by != "week":  # the largest group first
        assert [g["received"] for g in groups] == sorted(
            (g["received"] for g in groups), reverse=True
        )


def test_csv_has_a_row_per_group_and_the_total(demo: Demo) -> None:
    result = demo.run("report", "--since", "all", "--by", "provider", "--format", "csv")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == [
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
    ]
    data = demo.json("--since", "all", "--by", "provider")
    expected = [*data["groups"], data["total"]]
    assert [r[0] for r in rows[1:]] == [f["key"] for f in expected]
    assert rows[-1][0] == "all"
    for row, f in zip(rows[1:], expected, strict=True):
        assert [int(x) for x in row[1:4]] == [f[k] for k in COUNTS]
        assert [int(x) for x in row[12:16]] == [f[k] for k in (*DECIDED, "resolution_breached")]
        median = f["first_response"]["median"]
        assert row[4] == ("" if median is None else str(round(median)))  # whole seconds


@pytest.mark.parametrize(
    "args",
    [
        ("--since", "all"),
        ("--since", "all", "--by", "week"),
        ("--since", "all", "--by", "category"),
        ("--since", "30d", "--queue", "it", "--by", "provider"),
    ],
)
def test_json_equals_the_in_process_report(demo: Demo, args: tuple[str, ...]) -> None:
    data = demo.json(*args)
    ws = open_workspace(load_settings(demo.root / "config.toml"))
    try:
        with ws.db.session() as s:
            report = build(
                s,
                calendar_tz=BERLIN,
                since=datetime.fromisoformat(data["since"]),
                until=datetime.fromisoformat(data["until"]),
                queue=data["queue"],
                by=data["by"],
            )
    finally:
        ws.close()
    assert report.as_dict() == data


def test_since_a_date_starts_at_local_midnight(demo: Demo) -> None:
    day = datetime.now(BERLIN).date() - timedelta(days=7)
    data = demo.json("--since", day.isoformat())
    start = datetime(day.year, day.month, day.day, tzinfo=BERLIN)
    assert datetime.fromisoformat(data["since"]) == start
    assert data["days"][0]["day"] == day.isoformat()
    assert len(data["days"]) in (8, 9)  # a week ago to today (9 if the day turned meanwhile)


def test_table_title_shows_the_date_asked_for(demo: Demo) -> None:
    day = datetime.now(BERLIN).date() - timedelta(days=7)
    result = demo.run("report", "--since", day.isoformat())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tickets created {day.isoformat()} to ")


def test_bad_since_is_a_usage_error(demo: Demo) -> None:
    result = demo.run("report", "--since", "yesterday")
    assert_user_error(result, 2, "--since 'yesterday' is not a period", "30d", "all")
    assert result.stdout == ""


def test_unknown_queue_is_a_usage_error(demo: Demo) -> None:
    result = demo.run("report", "--queue", "sales")
    assert_user_error(result, 2, "no queue 'sales'", "facilities, hr, it")
    assert result.stdout == ""


@pytest.mark.parametrize("since", ["2099-01-01", "3000y"])
def test_out_of_range_since_gives_a_message(demo: Demo, since: str) -> None:
    result = demo.run("report", "--since", since)
    assert "Traceback" not in result.stderr, result.stderr[-300:]
    if result.returncode != 0:
        assert_user_error(result, 2, "--since")


def test_now_is_utc_aware(demo: Demo) -> None:
    data = demo.json("--since", "all")
    until = datetime.fromisoformat(data["until"])
    assert until.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - until) < timedelta(minutes=10)


def test_by_choices_are_the_reports_groupings() -> None:
    """The CLI's copy of the groupings (kept apart so commands start without the database)."""
    from store.report import BY
    from tui.cli_report import BY as CLI_BY

    assert CLI_BY == BY


def test_building_the_parser_loads_no_database_code() -> None:
    """``deskq poll`` starts its parse worker before loading SQLAlchemy (see cmd_poll)."""
    code = "from tui.cli import build_parser; build_parser()"
    assert modules_loaded_by(code, ("sqlalchemy",)) == []
