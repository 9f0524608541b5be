"""The ticket screen: quotes, headers, history, next/previous, links, attachments, unread, split."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mail.demo_mail import PDF, PNG
from store.models import Attachment, Direction, Message, TicketRead
from tests.tui.conftest import ME, OTHER, UI, Demo, plain, running
from tui.dialogs import ChoiceDialog, HelpScreen, TextDialog
from tui.ticket_screen import TicketScreen

QUOTED_BODY = (
    "Still broken after the restart.\n"
    "\n"
    "On Mon, 2 Mar 2026 at 09:00, Help Desk wrote:\n"
    "> Please restart the laptop\n"
    "> and try again.\n"
)


async def open_ticket(ui: UI, ticket_id: int) -> TicketScreen:
    """Cursor to the ticket, enter, and wait for its conversation."""
    await ui.goto(ticket_id)
    await ui.press("enter")
    screen: TicketScreen = await ui.screen(TicketScreen)
    await shown(ui, screen, ticket_id)
    return screen


async def shown(ui: UI, screen: TicketScreen, ticket_id: int) -> None:
    await ui.wait(
        lambda: screen.detail is not None and screen.detail.ticket.id == ticket_id,
        f"ticket #{ticket_id} on screen",
    )
    await ui.settle()


def header(screen: TicketScreen) -> str:
    return plain(screen.query_one("#ticket-header").content)


def conversation(screen: TicketScreen) -> str:
    return "\n".join(plain(w.content) for w in screen.query(".message"))


def read_version(demo: Demo, ticket_id: int) -> int | None:
    with demo.ws.db.session() as s:
        return s.scalar(
            select(TicketRead.version).where(
                TicketRead.ticket_id == ticket_id, TicketRead.person_id == demo.person_id(ME)
            )
        )


@pytest.fixture
def quoted(demo_ws: Demo) -> int:
    """A new ticket whose mail quotes earlier history (delivered and polled)."""
    demo_ws.deliver("Laptop still broken", QUOTED_BODY)
    demo_ws.poll()
    return demo_ws.ids()[0]


async def test_quotes_fold_headers_and_history_toggle(demo_ws: Demo, quoted: int) -> None:
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, quoted)
        assert f"#{quoted} [it] Laptop still broken" in header(screen)
        text = conversation(screen)
        assert "Still broken after the restart." in text
        assert "··· 3 quoted lines (z shows them)" in text
        assert "Please restart the laptop" not in text

        await ui.press("z")
        await ui.wait(lambda: "> Please restart the laptop" in conversation(screen), "unfolded")
        assert "Help Desk wrote:" in conversation(screen)
        await ui.press("z")
        await ui.wait(lambda: "quoted lines (z shows them)" in conversation(screen), "folded")

        await ui.press("h")
        await ui.wait(lambda: "Message-ID: <" in conversation(screen), "the raw headers")
        text = conversation(screen)
        assert "Subject: Laptop still broken" in text
        assert "From: New Comer <newcomer@corp.example>" in text
        await ui.press("h")
        await ui.wait(lambda: "Message-ID: <" not in conversation(screen), "headers hidden")

        assert len(screen.query(".history")) == 1
        history = plain(screen.query_one(".history").content)
        assert "created by deskq" in history
        await ui.press("e")
        await ui.wait(lambda: not screen.query(".history"), "the history hidden")
        await ui.press("e")
        await ui.wait(lambda: screen.query(".history"), "the history shown again")


async def test_next_and_previous_ticket_follow_the_queue(demo_ws: Demo) -> None:
    ids = demo_ws.ids()
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, ids[1])
        await ui.press("J")
        await shown(ui, screen, ids[2])
        assert header(screen).startswith(f"#{ids[2]} ")
        assert ui.tickets.current.id == ids[2]
        await ui.press("K")
        await shown(ui, screen, ids[1])
        await ui.press("K")
        await shown(ui, screen, ids[0])
        assert header(screen).startswith(f"#{ids[0]} ")
        await ui.press("escape")
        await ui.wait(lambda: ui.app.screen is ui.queue, "back to the queue")
        assert ui.tickets.current.id == ids[0]


async def test_quick_next_ticket_shows_the_ticket_it_moved_to(
    demo_ws: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a slow, superseded read was shown over the newer one (fixed in e9bf171)."""
    ids = demo_ws.ids()
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, ids[0])
        original = ui.app.desk.detail
        started, finished = threading.Event(), threading.Event()

        def slow_for_one(ticket_id: int, mark_read: bool = True) -> Any:
            if ticket_id != ids[1]:
                return original(ticket_id, mark_read)
            started.set()
            time.sleep(0.3)  # a slow database for this ticket only (in the worker thread)
            try:
                return original(ticket_id, mark_read)
            finally:
                finished.set()

        monkeypatch.setattr(ui.app.desk, "detail", slow_for_one)
        await ui.press("J")  # to ids[1], slow to read...
        await ui.wait(started.is_set, "the read of the next ticket to start")
        await ui.press("J")  # ...and on to ids[2] before it is shown
        await ui.wait(finished.is_set, "the slow read to finish")
        await ui.settle()
        await ui.pilot.pause(0.05)
        assert screen.ticket_id == ui.tickets.current.id == ids[2]
        assert screen.detail.ticket.id == ids[2]
        assert header(screen).startswith(f"#{ids[2]} ")


async def test_link_jump(demo_ws: Demo) -> None:
    from store import services

    a, b = demo_ws.ids()[0], demo_ws.ids()[3]
    demo_ws.act_as(OTHER, services.link, a, b)
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, a)
        assert f"links #{b} (related)" in header(screen)
        await ui.press("L")
        dialog = await ui.screen(ChoiceDialog)
        assert dialog.title_text == "Go to ticket"
        await ui.choose("", expect=str(b))
        await shown(ui, screen, b)
        assert header(screen).startswith(f"#{b} ")
        assert f"links #{a} (related)" in header(screen)


async def test_no_links_says_so(demo_ws: Demo) -> None:
    async with running(demo_ws) as ui:
        await open_ticket(ui, demo_ws.ids()[0])
        await ui.press("L")
        await ui.wait(lambda: "this ticket has no linked tickets" in ui.texts(), "a notice")


def with_attachment(demo: Demo) -> tuple[int, str]:
    with demo.ws.db.session() as s:
        tid, name = s.execute(
            select(Message.ticket_id, Attachment.filename)
            .join(Message, Message.id == Attachment.message_id)
            .order_by(Message.ticket_id.desc())
        ).first()
    return tid, name


async def test_attachment_saved_into_a_folder(
    demo_ws: Demo, downloads: Path, tmp_path: Path
) -> None:
    tid, name = with_attachment(demo_ws)
    content = {"screenshot.png": PNG, "document.pdf": PDF}[name]
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, tid)
        assert f"📎 {name}" in conversation(screen)

        for folder in (downloads, tmp_path / "typed"):
            await ui.press("A")
            await ui.choose(name.split(".")[0], expect="0")
            await ui.choose("save", expect="save")
            dialog = await ui.screen(TextDialog)
            assert dialog.value == str(downloads)  # DESKQ_DOWNLOADS is offered
            if folder == downloads:
                await ui.press("enter")
            else:
                await ui.answer(str(folder))
            await ui.wait(lambda f=folder: f"saved {f / name}" in ui.texts(), f"saved in {folder}")
            await ui.settle()
            assert (folder / name).read_bytes() == content

        # Saving again never overwrites: "name (2).ext".
        await ui.press("A")
        await ui.choose("", expect="0")
        await ui.choose("save", expect="save")
        await ui.screen(TextDialog)
        await ui.press("enter")
        stem, suffix = name.rsplit(".", 1)
        again = downloads / f"{stem} (2).{suffix}"
        await ui.wait(lambda: f"saved {again}" in ui.texts(), "saved under a new name")
        assert again.read_bytes() == content


async def test_unread_from_the_ticket_screen(demo_ws: Demo) -> None:
    tid = demo_ws.ids()[0]
    assert read_version(demo_ws, tid) is None
    async with running(demo_ws) as ui:
        assert ui.tickets.rows[0].unread and ui.screen_lines()[1][1] == "●"
        screen = await open_ticket(ui, tid)
        version = screen.detail.ticket.version
        await ui.wait(lambda: read_version(demo_ws, tid) == version, "opening to mark it read")
        await ui.press("U")
        await ui.wait(lambda: ui.app.screen is ui.queue, "back to the queue")
        await ui.settle()
        assert read_version(demo_ws, tid) is None
        assert ui.tickets.rows[0].unread and ui.screen_lines()[1][1] == "●"


async def test_row_shows_read_after_reading_the_ticket(demo_ws: Demo) -> None:
    """Regression: the row stayed unread (●) after reading the ticket (fixed in e9bf171)."""
    tid = demo_ws.ids()[0]
    async with running(demo_ws) as ui:
        assert ui.tickets.rows[0].unread
        await open_ticket(ui, tid)
        await ui.press("q")
        await ui.wait(lambda: ui.app.screen is ui.queue, "back to the queue")
        await ui.wait(lambda: not ui.tickets.rows[0].unread, "the row shown read", timeout=1)


async def test_unread_from_the_queue(demo_ws: Demo) -> None:
    ids = demo_ws.ids()
    read = next(t for t in ids if read_version(demo_ws, t) is not None)
    async with running(demo_ws) as ui:
        await ui.goto(read)
        assert not ui.tickets.rows[ui.tickets.cursor].unread
        await ui.press("U")
        await ui.wait(lambda: ui.tickets.rows[ui.tickets.cursor].unread, "the row shown unread")
        line = ui.screen_lines()[ui.tickets.cursor - ui.tickets.top + 1]
        assert line[1] == "●"
    assert read_version(demo_ws, read) is None


def two_inbound(demo: Demo) -> tuple[int, list[int]]:
    """A ticket with two or more received messages, and their ids."""
    with demo.ws.db.session() as s:
        rows = s.execute(
            select(Message.ticket_id, Message.id)
            .where(Message.direction == Direction.INBOUND)
            .order_by(Message.ticket_id.desc(), Message.id)
        ).all()
    by_ticket: dict[int, list[int]] = {}
    for tid, mid in rows:
        by_ticket.setdefault(tid, []).append(mid)
    tid = next(t for t, mids in by_ticket.items() if len(mids) >= 2)
    return tid, by_ticket[tid]


async def test_split_a_message_out_into_a_new_ticket(demo_ws: Demo) -> None:
    tid, messages = two_inbound(demo_ws)
    moved = messages[1]
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, tid)
        before = len(screen.query(".message"))
        await ui.press("x")
        dialog = await ui.screen(ChoiceDialog)
        assert dialog.title_text == "Split which message out?"
        await ui.press("down")
        await ui.choose("", expect=str(moved))
        await ui.wait(
            lambda: any(n.startswith(f"split out: #{tid} → new #") for n in ui.texts()), ""
        )
        await shown(ui, screen, tid)
        await ui.wait(lambda: len(screen.query(".message")) == before - 1, "one message fewer")
    new = int(next(n for n in ui.texts() if "→ new #" in n).rsplit("#", 1)[1])
    assert [(e.kind, e.actor, e.data) for e in demo_ws.events(tid, start)] == [
        ("split", ME, {"message": moved, "into": new})
    ]
    (created,) = demo_ws.events(new, start)
    assert (created.kind, created.actor) == ("created", ME)
    assert created.data["split_from"] == tid and created.data["message"] == moved
    assert [m.id for m in demo_ws.detail(new).messages] == [moved]
    assert moved not in [m.id for m in demo_ws.detail(tid).messages]
    assert (new, "split") in demo_ws.detail(tid).links


async def test_split_needs_two_received_messages(demo_ws: Demo) -> None:
    single = next(t for t in demo_ws.ids() if len(demo_ws.detail(t).messages) == 1)
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await open_ticket(ui, single)
        await ui.press("x")
        await ui.wait(
            lambda: "only a ticket with two or more received messages can be split" in ui.texts(),
            "the warning",
        )
    assert demo_ws.events(single, start) == []


async def test_triage_and_help_from_the_ticket_screen(demo_ws: Demo) -> None:
    tid = demo_ws.ids(lambda t: t.assignee_id is None and t.status.value == "new")[0]
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, tid)
        assert "assigned to nobody" in header(screen)
        await ui.press("c")
        await ui.wait(lambda: "assigned to Alex Provider" in header(screen), "claimed")
        assert header(screen).count("open") >= 1
        # The conversation and history are mounted anew after the header changes:
        # waited for (old and new widgets may both be there for a moment).
        claim = "assignment by alex.provider@corp.example: - → alex.provider@corp.example"
        await ui.wait(
            lambda: any(claim in plain(h.content) for h in screen.query(".history")),
            "the claim in the history",
        )
        await ui.press("question_mark")
        help_screen = await ui.screen(HelpScreen)
        text = plain(help_screen.query_one(".help Static").content)
        assert "show / fold quoted history" in text and "next / previous ticket" in text
        await ui.press("escape")
        await ui.wait(lambda: ui.app.screen is screen, "help closed")
    assert [(e.kind, e.actor) for e in demo_ws.events(tid, start)] == [
        ("assignment", ME),
        ("status", ME),
    ]
