"""SLAs in the TUI: the Left column, the Breaching view, the breach notice, the reports screen."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from store import services
from store.config import load_settings
from store.models import Person, Queue, TicketClock
from store.report import for_settings
from store.workspace import open_workspace
from tests.tui.conftest import Demo, copy_demo, running
from tui import demo
from tui.cli_report import cells
from tui.reports_screen import ReportsScreen

SLA = """
[calendar]
timezone = "UTC"
hours = ["mon-sun 00:00-24:00"]

[[sla]]
first_response = "2h"
resolution = "2d"

[[sla]]
queue = "hr"
first_response = "0.05m"
"""


@pytest.fixture
def sla_demo(demo_template: Path, tmp_path: Path) -> Iterator[Demo]:
    """The demo workspace with SLA targets (opening it computes every ticket's clocks)."""
    root = tmp_path / "ws"
    copy_demo(demo_template, root).close()
    config = root / "config.toml"
    config.write_text(demo.demo_config(root) + SLA, encoding="utf-8")
    ws = open_workspace(load_settings(config))
    yield Demo(ws, root)
    ws.close()


def _clock_rows(d: Demo) -> dict[int, TicketClock]:
    with d.ws.db.session() as s:
        return {c.ticket_id: c for c in s.scalars(select(TicketClock))}


async def test_breaching_view_lists_running_targets_least_time_first(sla_demo: Demo) -> None:
    clocks = _clock_rows(sla_demo)
    expected = sorted((c.due, tid) for tid, c in clocks.items() if c.due is not None)
    assert expected, "the demo has open tickets with running targets"
    async with running(sla_demo, size=(120, 40)) as ui:
        assert "Breaching" in ui.view_bar()
        index = next(i for i, v in enumerate(ui.queue.views) if v.name == "Breaching")
        await ui.press(str(index + 1))
        await ui.wait(lambda: ui.current_view() == "Breaching", "the Breaching view")
        await ui.wait(lambda: ui.tickets.query.sort == "left", "the view's query")
        await ui.loaded()
        shown = ui.row_ids()
        assert shown == [tid for _, tid in expected][: len(shown)]
        first = ui.tickets.rows[0]
        assert first.sla_state == "breached" and first.sla_left is not None and first.sla_left < 0
        header = ui.screen_lines()[0]
        assert "Left" in header and ("▲" in header or "▼" in header)  # sorted on Left


async def test_a_ticket_of_mine_breaching_shows_a_notice(sla_demo: Demo) -> None:
    """hr's first-response target is 3 s: a ticket I claim now breaches while I watch."""
    async with running(sla_demo, size=(120, 40)) as ui:
        with sla_demo.ws.db.write() as s:
            hr = s.scalars(select(Queue).where(Queue.key == "hr")).one()
            me = s.scalars(select(Person).where(Person.address == demo.DEMO_ME)).one()
            bob = services.get_or_create_person(s, "bob@corp.example")
            ticket = services.open_ticket(s, queue=hr, requester=bob, subject="Payslip [red]x")
            s.flush()
            services.claim(s, ticket.id, 1, me)
            tid = ticket.id
        with sla_demo.ws.db.session() as s:
            clock = s.get(TicketClock, tid)
            assert clock is not None and clock.due is not None
            assert 0 < clock.due - time.time() <= 3.5
        text = f"SLA breached: #{tid} Payslip [red]x"  # literally: never markup
        await ui.wait(lambda: text in ui.texts("warning"), "the breach notice", timeout=10)


async def test_reports_screen_shows_the_numbers_of_deskq_report(sla_demo: Demo) -> None:
    async with running(sla_demo, size=(160, 60)) as ui:
        await ui.press("T")
        screen = await ui.screen(ReportsScreen)
        await ui.wait(lambda: screen.report is not None, "the report", timeout=30)
        assert screen.report is not None
        with sla_demo.ws.db.session() as s:
            same = for_settings(
                s, sla_demo.ws.settings, "30d", now=datetime.now(UTC), queue=None, by="queue"
            )
        assert [g.key for g in screen.report.groups] == [g.key for g in same.groups]
        assert cells(screen.report.total)[:3] == cells(same.total)[:3]
        table = screen.query_one("#report-table")
        assert table.row_count == len(same.groups) + 1
        await ui.press("b")
        await ui.wait(lambda: screen.report and screen.report.by == "provider", "by provider")
        await ui.press("p")
        await ui.wait(lambda: screen.report and screen.period == "90d", "90 days")
        await ui.wait(
            lambda: screen.report and "90d" in str(screen.query_one("#report-title").content),
            "the title",
        )
        await ui.press("f")
        await ui.wait(lambda: screen.report and screen.report.queue == "it", "queue it")
        await ui.press("q")
        await ui.wait(lambda: not isinstance(ui.app.screen, ReportsScreen), "back to the queue")


def test_chart_labels_are_plain_and_short() -> None:
    """Group names (a provider's display name comes from email) reach plotext cleaned."""
    from tui.reports_screen import LABEL, label

    text = label("\x1b[2J\x1b]0;pwned\x07[bold]Mallory[/bold] \u202eevil name that is long")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert len(text) <= LABEL and text.startswith("[bold]Mallory")
