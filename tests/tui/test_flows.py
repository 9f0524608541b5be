"""Queue flows: loading, moving, views, the filter bar, sorting, saved views, marks, help."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from textual.command import CommandPalette

from store.models import Status, Ticket
from store.pages import saved_views
from tests.tui.conftest import ME, Demo, running, widget_lines
from tui.dialogs import ChoiceDialog, HelpScreen
from tui.ticket_list import STATUS_SHORT, age
from tui.ticket_screen import TicketScreen

ACTIVE = {Status.NEW, Status.OPEN, Status.PENDING, Status.ON_HOLD}


def mentions(demo: Demo, ticket_id: int, word: str) -> bool:
    """Whether the ticket's mail (subject or body) contains ``word`` as a word."""
    detail = demo.detail(ticket_id)
    text = " ".join(m.subject + " " + m.text for m in detail.messages)
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


async def test_queue_loads_and_keys_move_the_cursor(demo_ws: Demo) -> None:
    ids = demo_ws.ids()
    async with running(demo_ws) as ui:
        lst = ui.tickets
        assert ui.row_ids() == ids  # newest first, all 50 in the first page
        assert ui.status_line() == f"1/{len(ids)} tickets"
        assert lst.current.id == ids[0]
        # The header and the first row as drawn.
        lines = ui.screen_lines()
        assert lines[0].split()[:2] == ["#", "▼"]
        assert str(ids[0]) in lines[1].split()[:2]  # after the unread marker, if any

        await ui.press("j", "j")
        await ui.wait(lambda: ui.status_line() == f"3/{len(ids)} tickets", "3/N")
        assert lst.current.id == ids[2]
        await ui.press("k")
        await ui.wait(lambda: lst.cursor == 1, "k moves up")

        page = lst.body_height
        await ui.press("space")  # a page down
        await ui.wait(lambda: lst.cursor == 1 + page, "a page down")
        assert lst.top > 0 and lst.top <= lst.cursor < lst.top + page  # scrolled into view
        await ui.press("ctrl+d")  # half a page down
        await ui.wait(lambda: lst.cursor == min(1 + page + page // 2, len(ids) - 1), "ctrl+d")
        await ui.press("G")
        await ui.wait(lambda: lst.cursor == len(ids) - 1, "G: the last ticket")
        await ui.wait(lambda: ui.status_line() == f"{len(ids)}/{len(ids)} tickets", "N/N")
        assert str(ids[-1]) in ui.screen_lines()[lst.cursor - lst.top + 1]
        await ui.press("g")
        await ui.wait(lambda: lst.cursor == 0 and lst.top == 0, "g: the first ticket")

        await ui.press("j", "enter")
        screen = await ui.screen(TicketScreen)
        assert screen.ticket_id == ids[1]
        await ui.wait(lambda: screen.detail is not None, "the ticket to load")
        await ui.press("q")
        await ui.wait(lambda: ui.app.screen is ui.queue, "back on the queue")
        assert lst.current.id == ids[1]


VIEWS = {
    "All": lambda t, me: True,
    "Mine": lambda t, me: t.assignee_id == me and t.status in ACTIVE,
    "Unassigned": lambda t, me: t.assignee_id is None and t.status in ACTIVE,
    "IT Help": lambda t, me: t.queue.key == "it" and t.status in ACTIVE,
    "People Team": lambda t, me: t.queue.key == "hr" and t.status in ACTIVE,
    "Facilities": lambda t, me: t.queue.key == "facilities" and t.status in ACTIVE,
    "Waiting": lambda t, me: t.status in (Status.PENDING, Status.ON_HOLD),
    "Resolved": lambda t, me: t.status in (Status.RESOLVED, Status.CLOSED),
}


async def test_number_keys_and_brackets_switch_views(demo_ws: Demo) -> None:
    me = demo_ws.person_id(ME)
    expected = {
        name: demo_ws.ids(lambda t, where=where: where(t, me)) for name, where in VIEWS.items()
    }
    assert all(expected.values()), "every view has tickets in the demo"
    async with running(demo_ws) as ui:
        for number, name in enumerate(VIEWS, start=1):
            await ui.press(str(number))
            await ui.wait(lambda name=name: ui.current_view() == name, f"view {name}")
            await ui.loaded()
            assert ui.row_ids() == expected[name], name
            assert ui.tickets.total == len(expected[name])
            assert ui.status_line().startswith(f"1/{len(expected[name])} tickets")

        await ui.press("1", "right_square_bracket")
        await ui.wait(lambda: ui.current_view() == "Mine", "] to the next view")
        await ui.loaded()
        assert ui.row_ids() == expected["Mine"]
        await ui.press("left_square_bracket", "left_square_bracket")
        await ui.wait(lambda: ui.current_view() == "Resolved", "[ wraps to the last view")
        await ui.loaded()
        assert ui.row_ids() == expected["Resolved"]


async def test_filter_bar_fields_errors_and_full_text(any_demo: Demo) -> None:
    new_high = any_demo.ids(lambda t: t.status == Status.NEW and t.priority.value == "high")
    with_word = [tid for tid in any_demo.ids() if mentions(any_demo, tid, "vpn")]
    assert new_high and with_word
    async with running(any_demo) as ui:
        await ui.filter("status:new prio:high")
        assert ui.row_ids() == new_high
        assert ui.current_view() is None  # the bar shows "filter", not a view
        assert ui.status_line() == f"1/{len(new_high)} tickets · status:new prio:high"
        assert not ui.queue.query_one("#filter").display

        # A bad filter: an error notice, the list and the filter as they were.
        await ui.press("slash")
        box = ui.queue.query_one("#filter")
        await ui.wait(lambda: box.has_focus, "the filter bar")
        assert box.value == "status:new prio:high"
        box.value = ""
        await ui.type("stats:open")
        await ui.press("enter")
        await ui.wait(lambda: ui.texts("error"), "an error notice")
        assert "unknown filter stats:" in ui.texts("error")[-1]
        assert "did you mean status?" in ui.texts("error")[-1]
        assert ui.row_ids() == new_high
        assert ui.queue.query_text == "status:new prio:high"
        assert box.display  # still open to fix it
        await ui.press("escape")
        await ui.wait(lambda: not box.display and ui.tickets.has_focus, "escape closes the bar")

        # Free words search the mail (FTS5 on SQLite, tsvector on PostgreSQL).
        await ui.filter("VPN")
        assert ui.row_ids() == with_word
        await ui.filter("vpn is:done")
        assert ui.row_ids() == [
            t for t in with_word if any_demo.detail(t).ticket.status in ("resolved", "closed")
        ]


async def test_list_has_focus_after_a_filter_is_submitted(
    demo_ws: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(demo_ws) as ui:
        first_page = ui.app.desk.first_page

        def slow_first_page(query: Any, limit: int) -> Any:
            time.sleep(0.3)  # a slower database (in the worker thread)
            return first_page(query, limit)

        monkeypatch.setattr(ui.app.desk, "first_page", slow_first_page)
        await ui.press("slash")
        box = ui.queue.query_one("#filter")
        await ui.wait(lambda: box.has_focus, "the filter bar")
        await ui.paste("is:active")
        await ui.press("enter")
        await ui.wait(lambda: not box.display, "the filter bar closed")
        await ui.loaded()
        assert ui.row_ids() == demo_ws.ids(lambda t: t.status in ACTIVE)
        await ui.press("j")
        await ui.wait(lambda: ui.tickets.cursor == 1, "j to move the cursor", timeout=0.5)


def subject_key(demo: Demo, descending: bool) -> list[int]:
    with demo.ws.db.session() as s:
        rows = s.execute(select(Ticket.id, Ticket.subject)).all()
    ordered = sorted(rows, key=lambda r: (r.subject.lower(), r.id), reverse=descending)
    return [r.id for r in ordered]


async def test_sort_picker_toggles_direction_and_header_arrows(demo_ws: Demo) -> None:
    async with running(demo_ws) as ui:
        await ui.press("j", "j")
        kept = ui.tickets.current.id
        await ui.press("o")
        dialog = await ui.screen(ChoiceDialog)
        assert dialog.title_text == "Sort by"
        await ui.choose("Subject", expect="subject")
        await ui.wait(lambda: ui.tickets.query.sort == "subject", "sorted by subject")
        await ui.loaded()
        assert not ui.tickets.query.descending
        assert ui.row_ids() == subject_key(demo_ws, descending=False)
        assert "Subject ▲" in ui.screen_lines()[0]
        assert "▼" not in ui.screen_lines()[0]
        assert ui.tickets.current.id == kept  # the cursor stays on its ticket
        assert ui.status_line().endswith("sort:subject")

        await ui.press("o")
        await ui.choose("Subject", expect="subject")  # the same column again: reversed
        await ui.wait(lambda: ui.tickets.query.descending, "reversed")
        await ui.loaded()
        assert ui.row_ids() == subject_key(demo_ws, descending=True)
        assert "Subject ▼" in ui.screen_lines()[0]
        assert ui.status_line().endswith("sort:-subject")

        await ui.press("o")
        await ui.choose("Age", expect="created")  # another column: its natural order
        await ui.wait(lambda: ui.tickets.query.sort == "created", "sorted by age")
        await ui.loaded()
        assert ui.tickets.query.descending  # newest first
        assert ui.row_ids() == demo_ws.ids()  # the demo's ids grow with arrival time


@pytest.mark.parametrize("column", ["Age", "Prio"])
async def test_sort_arrow_shows_on_narrow_columns(demo_ws: Demo, column: str) -> None:
    async with running(demo_ws) as ui:
        await ui.press("o")
        await ui.choose(column)
        await ui.wait(lambda: ui.tickets.query.sort != "id", f"sorted by {column}")
        await ui.loaded()
        header = ui.screen_lines()[0]
        assert f"{column} ▼" in header or f"{column}▼" in header, header


async def test_saved_view_is_saved_shown_and_deleted(demo_ws: Demo) -> None:
    me = demo_ws.person_id(ME)
    async with running(demo_ws) as ui:
        await ui.filter("is:active vpn")
        rows = ui.row_ids()
        assert rows
        await ui.press("S")
        await ui.answer("vpn-active")
        await ui.wait(lambda: "view vpn-active saved" in ui.texts(), "the saved notice")
        await ui.wait(lambda: " 9:vpn-active " in ui.view_bar(), "the view in the bar")
        with demo_ws.ws.db.session() as s:
            assert saved_views(s, me) == [("vpn-active", "is:active vpn")]

        await ui.press("1")
        await ui.wait(lambda: ui.current_view() == "All", "All")
        await ui.press("9")
        await ui.wait(lambda: ui.current_view() == "vpn-active", "the saved view")
        await ui.loaded()
        assert ui.row_ids() == rows

        await ui.press("D")
        await ui.wait(lambda: "view vpn-active deleted" in ui.texts(), "the deleted notice")
        await ui.wait(lambda: "vpn-active" not in ui.view_bar(), "the view gone from the bar")
        with demo_ws.ws.db.session() as s:
            assert saved_views(s, me) == []
        await ui.press("1")
        await ui.wait(lambda: ui.current_view() == "All", "All")


async def test_saved_view_is_highlighted_after_saving(demo_ws: Demo) -> None:
    async with running(demo_ws) as ui:
        await ui.filter("is:active vpn")
        await ui.press("S")
        await ui.answer("vpn-active")
        await ui.wait(lambda: "vpn-active" in ui.view_bar(), "the view in the bar")
        await ui.settle()
        # The list shows the saved view's filter; the bar must not claim "Resolved".
        assert ui.current_view() in ("vpn-active", None)


async def test_deleting_a_view_shows_what_the_bar_says(demo_ws: Demo) -> None:
    async with running(demo_ws) as ui:
        await ui.filter("is:waiting")
        await ui.press("S")
        await ui.answer("waiting-2")
        await ui.wait(lambda: "waiting-2" in ui.view_bar(), "the view in the bar")
        await ui.press("9")
        await ui.wait(lambda: ui.current_view() == "waiting-2", "the saved view")
        await ui.loaded()
        await ui.press("D")
        await ui.wait(lambda: "waiting-2" not in ui.view_bar(), "the view deleted")
        await ui.settle()
        assert ui.current_view() == "All"
        assert ui.row_ids() == demo_ws.ids()


async def test_marks_apply_one_action_to_every_marked_ticket(demo_ws: Demo) -> None:
    ids = demo_ws.ids()[:3]
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await ui.press("v", "v", "v")
        await ui.wait(lambda: "3 marked" in ui.status_line(), "three marks")
        assert set(ui.tickets.marked) == set(ids)
        assert all(line.startswith("*") for line in ui.screen_lines()[1:4])
        await ui.press("t")
        await ui.answer("batch-test")
        await ui.wait(lambda: not ui.tickets.marked, "marks cleared")
        await ui.settle()
        await ui.wait(lambda: "marked" not in ui.status_line(), "the status line without marks")
        assert not any(line.startswith("*") for line in ui.screen_lines()[1:])
        assert any(n.startswith("tags: #") for n in ui.texts())
    for tid in ids:
        assert "batch-test" in demo_ws.detail(tid).ticket.tags
        (event,) = demo_ws.events(tid, after=start)
        assert (event.kind, event.actor) == ("tags", ME)
        assert "batch-test" in event.data["added"]
    untouched = demo_ws.ids()[3:]
    assert all(not demo_ws.events(tid, after=start) for tid in untouched)


async def test_unmark_all_and_escape_clear_marks(demo_ws: Demo) -> None:
    async with running(demo_ws) as ui:
        await ui.press("v", "v")
        await ui.wait(lambda: "2 marked" in ui.status_line(), "two marks")
        await ui.press("V")
        await ui.wait(lambda: "marked" not in ui.status_line(), "V unmarks all")
        assert not ui.tickets.marked
        await ui.press("v")
        await ui.wait(lambda: "1 marked" in ui.status_line(), "a mark")
        await ui.press("escape")
        await ui.wait(lambda: "marked" not in ui.status_line(), "escape unmarks all")


async def test_help_screen_lists_the_keys(demo_ws: Demo) -> None:
    async with running(demo_ws) as ui:
        await ui.press("question_mark")
        help_screen = await ui.screen(HelpScreen)
        await ui.pilot.pause()
        text = "\n".join(widget_lines(help_screen.query_one(".help Static")))
        for expected in (
            "Moving",
            "j k ↓ ↑",
            "Claim",
            "Merge into",
            "filter: status:",
            "S  D",
            "ctrl+p",
        ):
            assert expected in text, expected
        await ui.press("escape")
        await ui.wait(lambda: ui.app.screen is ui.queue, "help closed")


async def test_command_palette_lists_and_runs_triage_actions(demo_ws: Demo) -> None:
    target = demo_ws.ids(lambda t: t.status == Status.NEW and t.assignee_id is None)[0]
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await ui.goto(target)
        await ui.press("ctrl+p")
        palette = await ui.screen(CommandPalette)
        await ui.type("Claim")

        def prompts() -> list[str]:
            from textual.widgets import OptionList

            options = palette.query_one(OptionList)
            return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

        await ui.wait(lambda: any("Claim (c)" in p for p in prompts()), "Claim in the palette")
        await ui.press("enter")
        await ui.wait(lambda: ui.app.screen is ui.queue, "the palette closed")
        await ui.wait(lambda: f"claim: #{target}" in ui.texts(), "the claim notice")
        await ui.settle()
    kinds = [(e.kind, e.actor) for e in demo_ws.events(target, after=start)]
    assert kinds == [("assignment", ME), ("status", ME)]
    assert demo_ws.detail(target).ticket.assignee.address == ME


async def test_header_titles_sit_above_their_columns(demo_ws: Demo) -> None:
    """Regression: the header was drawn 2 cells left of the rows (fixed in e9bf171)."""
    async with running(demo_ws) as ui:
        now = datetime.now(UTC)
        header, *rows = ui.screen_lines()[: ui.tickets.body_height + 1]
        for row, summary in zip(rows, (r.ticket for r in ui.tickets.rows), strict=False):
            assert row[header.index("Subject") :].startswith(summary.subject[:20]), (header, row)
            status = STATUS_SHORT[summary.status]
            assert row[header.index("Status") :].startswith(status), (header, row)
            assert row[header.index("Age") :].startswith(age(summary.created_at, now)), row
            assert row[: header.index(" Queue")].endswith(str(summary.id)), (header, row)


async def test_cursor_row_is_highlighted_across_every_cell(demo_ws: Demo) -> None:
    urgent = demo_ws.ids(lambda t: t.priority.value in ("high", "urgent"))[0]
    async with running(demo_ws) as ui:
        await ui.goto(urgent)
        strip = ui.tickets.render_line(ui.tickets.cursor - ui.tickets.top + 1)
        backgrounds = {(seg.text, seg.style.bgcolor.name) for seg in strip if seg.style}
        assert len({bg for _, bg in backgrounds}) == 1, sorted(backgrounds)


async def test_small_terminal_shows_the_key_columns(demo_ws: Demo) -> None:
    async with running(demo_ws, size=(80, 24)) as ui:
        lines = ui.screen_lines()
        header = lines[0].split()
        for title in ("#", "Queue", "Age", "Prio", "Status", "Request", "Subject", "Assignee"):
            assert any(cell.startswith(title) for cell in header), title
        assert all(len(line) == 80 for line in lines)
        ids = demo_ws.ids()
        assert [int(line.split()[1]) for line in lines[1 : ui.tickets.body_height + 1]] == (
            ids[: ui.tickets.body_height]
        )
        assert ui.status_line() == f"1/{len(ids)} tickets"
        await ui.press("enter")
        screen = await ui.screen(TicketScreen)
        await ui.wait(lambda: screen.detail is not None, "the ticket")
        await ui.settle()
        header_text = "\n".join(widget_lines(screen.query_one("#ticket-header")))
        assert f"#{ids[0]}" in header_text


async def test_small_terminal_view_bar_shows_there_are_more_views(demo_ws: Demo) -> None:
    async with running(demo_ws, size=(80, 24)) as ui:
        (bar,) = widget_lines(ui.queue.query_one("#view-bar"))
        assert "8:Resolved" in bar or bar.rstrip().endswith("…"), bar
