"""Replying from the TUI: template, edit, $EDITOR, drafts that survive, held sends, the outbox."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import select
from textual.widgets import Input, TextArea

from mail import sender
from store import services
from store.models import Message, OutboxItem, OutboxState, Status
from tests.tui.conftest import OTHER, Demo, running
from tui.compose_screen import ComposeScreen, draft_path, load_draft
from tui.desk import Desk
from tui.dialogs import ConflictDialog


@pytest.fixture(autouse=True)
def drafts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "drafts"
    monkeypatch.setenv("DESKQ_DRAFTS_DIR", str(folder))
    return folder


def outbox(demo: Demo) -> list[OutboxItem]:
    with demo.ws.db.session() as s:
        items = list(s.scalars(select(OutboxItem).where(OutboxItem.kind == "reply")))
        s.expunge_all()
        return items


def open_ticket_id(demo: Demo) -> int:
    return demo.ids(lambda t: t.status in (Status.NEW, Status.OPEN))[0]


async def _compose(ui, template: str, *answers: str) -> ComposeScreen:  # type: ignore[no-untyped-def]
    await ui.press("r")
    await ui.choose(template, expect=template)
    for text in answers:
        await ui.answer(text)
    return await ui.screen(ComposeScreen)


async def test_reply_with_a_template_is_queued_threaded_and_sets_status(demo_ws: Demo) -> None:
    tid = open_ticket_id(demo_ws)
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        screen = await _compose(ui, "need-info", "Which laptop model is it?")
        body = screen.query_one("#compose-body", TextArea).text
        assert "Which laptop model is it?" in body and "\n-- \n" in body
        assert " wrote:\n> " in body  # the answered message, quoted
        subject = screen.query_one("#compose-subject", Input).value
        assert f"#{tid}]" in subject
        await ui.press("ctrl+s")
        await ui.wait(lambda: not isinstance(ui.app.screen, ComposeScreen), "the reply to go")
        await ui.settle()
    (item,) = outbox(demo_ws)
    assert item.state == OutboxState.QUEUED and item.ticket_id == tid
    detail = demo_ws.detail(tid)
    assert detail.ticket.status == "pending"  # the template's status_after
    ours = [m for m in detail.messages if m.direction == "outbound"][-1]
    inbound = [m for m in detail.messages if m.direction == "inbound"][-1]
    assert ours.in_reply_to == inbound.message_id and ours.message_id == item.message_id
    raw = item.raw.decode("utf-8", "replace")
    assert "From: Alex Provider via " in raw and "X-Deskq-Ticket: " in raw
    assert detail.ticket.first_response_at is None  # queued is not delivered
    assert not draft_path(Desk(demo_ws.ws), tid).exists()  # sent: the draft is gone


async def test_editor_round_trip(
    demo_ws: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "editor"
    script.write_text('#!/bin/sh\nprintf "Edited in the editor.\\n" > "$1"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("EDITOR", str(script))
    monkeypatch.delenv("VISUAL", raising=False)
    tid = open_ticket_id(demo_ws)
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        screen = await _compose(ui, "")
        await ui.press("ctrl+e")
        body = screen.query_one("#compose-body", TextArea)
        await ui.wait(lambda: body.text == "Edited in the editor.\n", "the edited text")
        await ui.press("ctrl+s")
        await ui.wait(lambda: not isinstance(ui.app.screen, ComposeScreen), "sent")
        await ui.settle()
    (item,) = outbox(demo_ws)
    assert b"Edited in the editor." in item.raw


async def test_a_draft_survives_and_is_resumed(demo_ws: Demo) -> None:
    tid = open_ticket_id(demo_ws)
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        screen = await _compose(ui, "")
        body = screen.query_one("#compose-body", TextArea)
        body.load_text("Half a thought")
        path = draft_path(Desk(demo_ws.ws), tid)
        await ui.wait(
            lambda: (d := load_draft(path)) is not None and d.body == "Half a thought",
            "the draft on disk",
        )  # written while typing: a crash from here on loses nothing
        await ui.press("ctrl+d")  # leave the screen so the app can be shut down
        await ui.wait(lambda: not isinstance(ui.app.screen, ComposeScreen), "the draft kept")
        await ui.settle()
    # a new app on the same workspace: the draft is still there and is offered
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        await ui.press("r")
        await ui.choose("resume", expect="resume")
        screen = await ui.screen(ComposeScreen)
        assert screen.query_one("#compose-body", TextArea).text == "Half a thought"
        await ui.press("ctrl+d")
        await ui.wait(lambda: not isinstance(ui.app.screen, ComposeScreen), "the draft kept")
        await ui.settle()
    assert outbox(demo_ws) == []


async def test_send_is_held_when_something_arrived_since(demo_ws: Demo) -> None:
    tid = open_ticket_id(demo_ws)
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        await _compose(ui, "")
        screen = ui.app.screen
        screen.query_one("#compose-body", TextArea).load_text("My answer")
        demo_ws.act_as(OTHER, services.add_note, tid, "I am already on this one")
        await ui.press("ctrl+s")
        dialog = await ui.screen(ConflictDialog)
        shown = str(dialog.query_one(".conflict-changes Static").render())
        assert "note by " + OTHER in shown
        await ui.press("d")
        await ui.wait(lambda: isinstance(ui.app.screen, ComposeScreen), "back to the reply")
        assert outbox(demo_ws) == []
        await ui.press("ctrl+s")
        await ui.screen(ConflictDialog)
        await ui.press("r")  # send anyway, on top of the note
        await ui.wait(
            lambda: not isinstance(ui.app.screen, (ComposeScreen, ConflictDialog)), "sent"
        )
        await ui.settle()
    assert len(outbox(demo_ws)) == 1


async def test_queued_reply_is_delivered_by_the_sender_and_counts_as_first_response(
    demo_ws: Demo,
) -> None:
    tid = open_ticket_id(demo_ws)
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        await _compose(ui, "")
        ui.app.screen.query_one("#compose-body", TextArea).load_text("Done.")
        await ui.press("ctrl+s")
        await ui.wait(lambda: not isinstance(ui.app.screen, ComposeScreen), "queued")
        await ui.settle()
    settings = demo_ws.ws.settings.sending
    assert settings is not None and settings.method == "folder"  # the demo's outbox folder
    report = sender.send_due(demo_ws.ws.db, sender.make_transport(settings))
    assert len(report.sent) == 1
    assert list(Path(settings.folder or "").glob("*.eml"))
    assert demo_ws.detail(tid).ticket.first_response_at is not None
    with demo_ws.ws.db.session() as s:
        assert s.scalar(
            select(Message.id).where(Message.ticket_id == tid, Message.text_body.like("Done.%"))
        )


async def test_a_failed_email_shows_and_is_retried_from_the_outbox_screen(demo_ws: Demo) -> None:
    from tui.outbox_screen import OutboxScreen

    tid = open_ticket_id(demo_ws)
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        await _compose(ui, "")
        ui.app.screen.query_one("#compose-body", TextArea).load_text("Try this.")
        await ui.press("ctrl+s")
        await ui.wait(lambda: not isinstance(ui.app.screen, ComposeScreen), "queued")
        (claimed,) = sender.claim(demo_ws.ws.db)
        sender.mark_failed(demo_ws.ws.db, claimed, sender.PermanentFailure("550 no such user"))
        await ui.wait(lambda: "not sent" in ui.status_line(), "the failure on the status line")
        await ui.press("O")
        screen = await ui.screen(OutboxScreen)
        await ui.wait(lambda: bool(screen.items), "the outbox rows")
        assert screen.items[0]["state"] == "failed" and "550" in screen.items[0]["last_error"]
        await ui.press("r")
        await ui.wait(lambda: screen.items and screen.items[0]["state"] == "queued", "queued again")
        await ui.press("q")
        await ui.settle()
    (item,) = outbox(demo_ws)
    assert item.state == OutboxState.QUEUED


async def test_the_template_picker_previews_the_highlighted_template(demo_ws: Demo) -> None:
    from textual.widgets import Static

    from tui.compose_screen import TemplatePicker

    tid = open_ticket_id(demo_ws)
    async with running(demo_ws) as ui:
        await ui.goto(tid)
        await ui.press("r")
        picker = await ui.screen(TemplatePicker)
        await ui.paste("wont")
        preview = picker.query_one("#template-preview", Static)
        await ui.wait(lambda: "will\nnot be able" in str(preview.render()), "the wont-do preview")
        assert f"#{tid}]" in str(preview.render()) and "<reason>" in str(preview.render())
        await ui.press("escape")
        await ui.wait(lambda: not isinstance(ui.app.screen, TemplatePicker), "closed")
        await ui.settle()
    assert outbox(demo_ws) == []
