"""Live updates without a keypress, and hostile email text shown harmlessly."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from textual.widgets import OptionList
from textual.widgets._toast import Toast

from store import services
from store.models import Attachment, Blob, Direction, Message, Queue, Status
from tests.tui.conftest import OTHER, Demo, plain, running, widget_lines
from tests.tui.test_ticket_screen import conversation, header, open_ticket
from tui.dialogs import ChoiceDialog, TextDialog

LIVE_WITHIN = 2.0  # seconds: the promise of the live queue


async def test_new_mail_appears_without_a_keypress(any_demo: Demo) -> None:
    before = any_demo.ids()
    async with running(any_demo) as ui:
        any_demo.deliver("Monitor flickers", "My monitor flickers since this morning.")
        await asyncio.to_thread(any_demo.poll)  # the poller, in another thread, as in the app
        arrived = time.monotonic()
        new = any_demo.ids()[0]
        assert new not in before
        await ui.wait(lambda: ui.row_ids()[:1] == [new], "the new ticket on top", LIVE_WITHIN)
        await ui.wait(
            lambda: f"new #{new} [it] Monitor flickers" in ui.texts(), "a notice", LIVE_WITHIN
        )
        assert time.monotonic() - arrived < LIVE_WITHIN
        assert ui.row_ids()[1:] == before
        assert ui.tickets.current.id == before[0]  # the cursor stays on what I was reading
        await ui.wait(lambda: ui.status_line() == f"2/{len(before) + 1} tickets", "the count")


async def test_new_ticket_from_the_services_appears_too(demo_ws: Demo) -> None:
    async with running(demo_ws) as ui:
        with demo_ws.ws.db.write() as s:
            queue = s.query(Queue).filter_by(key="hr").one()
            requester = services.get_or_create_person(s, "new.hire@corp.example", "New Hire")
            ticket = services.open_ticket(s, queue=queue, requester=requester, subject="Badge")
            s.flush()
            tid = ticket.id
        await ui.wait(lambda: ui.row_ids()[:1] == [tid], "the ticket on top", LIVE_WITHIN)
        await ui.wait(lambda: f"new #{tid} [hr] Badge" in ui.texts(), "a notice", LIVE_WITHIN)


async def test_change_by_another_provider_updates_the_row_and_ticket(demo_ws: Demo) -> None:
    tid = demo_ws.ids()[1]
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, tid)
        demo_ws.act_as(OTHER, services.add_note, tid, "Looked at it from the other desk.")
        await ui.wait(
            lambda: "Looked at it from the other desk." in conversation(screen),
            "the note in the open ticket",
            LIVE_WITHIN,
        )
        await ui.press("q")
        demo_ws.act_as(OTHER, services.set_status, tid, Status.ON_HOLD)
        await ui.wait(lambda: ui.tickets.rows[1].ticket.status == "on-hold", "row", LIVE_WITHIN)
        assert " hold " in ui.screen_lines()[2]
        assert not [n for n in ui.texts() if n.startswith("new #")]  # a change, not a new ticket


# ------------------------------------------------------------------ hostile text

HOSTILE_SUBJECT = "[bold red]URGENT[/] \x1b]0;pwned\x07re\x1b[31mset \u202eevil.exe"
HOSTILE_NAME = "[link=http://x]Boss[/link] \x1b[2J"
HOSTILE_BODY = "Click \x1b]8;;http://evil\x07here\x1b]8;;\x07 now \u202efdp.exe \x9b2J [b]done[/b]"
SAFE_SUBJECT = "[bold red]URGENT[/] reset evil.exe"
BAD = ("\x1b", "\x07", "\u202e", "\x9b")


def hostile_ticket(demo: Demo) -> int:
    with demo.ws.db.write() as s:
        queue = s.query(Queue).filter_by(key="it").one()
        requester = services.get_or_create_person(s, "boss@corp.example", HOSTILE_NAME)
        ticket = services.open_ticket(s, queue=queue, requester=requester, subject=HOSTILE_SUBJECT)
        s.add(
            Message(
                ticket_id=ticket.id,
                direction=Direction.INBOUND,
                from_addr="boss\x1b[8m@corp.example",
                subject=HOSTILE_SUBJECT,
                text_body=HOSTILE_BODY,
                threaded_by="new ticket \u202e",
            )
        )
        s.flush()
        return ticket.id


def harmless(text: str) -> bool:
    return not any(c in text for c in BAD)


async def test_hostile_subject_shows_literally_in_the_queue_and_ticket(demo_ws: Demo) -> None:
    tid = hostile_ticket(demo_ws)
    async with running(demo_ws, size=(160, 30)) as ui:
        assert ui.row_ids()[0] == tid
        line = ui.tickets.render_line(1).text
        assert "[bold red]URGENT[/] reset evil.exe" in line
        assert "[link=http://x]Boss[/link]" in line
        assert harmless(line)
        assert all(harmless(line) for line in ui.screen_lines())

        screen = await open_ticket(ui, tid)
        assert SAFE_SUBJECT in header(screen) and harmless(header(screen))
        shown = widget_lines(screen.query_one("#ticket-header"))
        assert any(SAFE_SUBJECT in line for line in shown), shown
        assert all(harmless(line) for line in shown)
        body = conversation(screen)
        assert "Click here now fdp.exe 2J [b]done[/b]" in body and harmless(body)
        message = screen.query_one(".message")
        assert harmless(str(message.border_title)) and harmless(str(message.border_subtitle))
        for widget in screen.query(".message"):
            assert all(harmless(line) for line in widget_lines(widget))


async def test_hostile_subject_in_a_live_notice_is_literal(demo_ws: Demo) -> None:
    async with running(demo_ws, notifications=True) as ui:
        tid = hostile_ticket(demo_ws)
        text = f"new #{tid} [it] {SAFE_SUBJECT}"
        await ui.wait(lambda: text in ui.texts(), "the notice", LIVE_WITHIN)
        (notice,) = [n for n in ui.notices if n.message == text]
        assert notice.markup is False

        def toast_lines() -> list[str]:
            toasts = [t for t in ui.app.screen.query(Toast) if "URGENT" in plain(t.render())]
            return widget_lines(toasts[0]) if toasts else []

        lines = await ui.wait(
            lambda: [line for line in toast_lines() if "URGENT" in line], "the toast on screen"
        )
        assert "[bold red]URGENT[/]" in lines[0], lines
        assert all(harmless(line) for line in toast_lines())


async def test_hostile_attachment_name_is_shown_and_saved_harmlessly(
    demo_ws: Demo, downloads: Path
) -> None:
    tid = hostile_ticket(demo_ws)
    data = b"#!/bin/sh\necho pwned\n"
    with demo_ws.ws.db.write() as s:
        message = s.query(Message).filter_by(ticket_id=tid).one()
        digest = hashlib.sha256(data).hexdigest()
        s.add(Blob(sha256=digest, size=len(data), compression="none", data=data))
        s.flush()  # the blob before the attachment that refers to it
        s.add(
            Attachment(
                message_id=message.id,
                filename="../../\x1b[31mevil\u202egnp.sh",
                media_type="application/x-sh",
                size=len(data),
                sha256=digest,
            )
        )
    async with running(demo_ws) as ui:
        screen = await open_ticket(ui, tid)
        assert "📎 ../../evilgnp.sh" in conversation(screen)
        await ui.press("A")
        picker = await ui.screen(ChoiceDialog)
        label = str(picker.query_one(OptionList).get_option_at_index(0).prompt)
        assert "evilgnp.sh" in label and harmless(label)
        await ui.choose("", expect="0")
        await ui.choose("save", expect="save")
        await ui.screen(TextDialog)
        await ui.press("enter")
        await ui.wait(lambda: any(n.startswith("saved ") for n in ui.texts()), "saved")
        await ui.settle()
    saved = [p for p in downloads.rglob("*") if p.is_file()]
    assert len(saved) == 1 and saved[0].parent == downloads  # not ../../ anywhere else
    assert harmless(saved[0].name) and "/" not in saved[0].name
    assert saved[0].read_bytes() == data
    assert not any(harmless(n) is False for n in ui.texts())
