"""Triage from the queue: every action's dialog, the events it writes, and conflicts."""

from __future__ import annotations

from sqlalchemy import select
from textual.widgets import Static, TextArea

from store import services
from store.models import Priority, Status, Ticket, TicketFlag
from tests.tui.conftest import ME, OTHER, UI, Demo, plain, running
from tui.dialogs import ChoiceDialog, ConflictDialog, NoteDialog, describe_change


def new_ticket(demo: Demo) -> int:
    """A new, unassigned ticket of normal priority, the kind triage starts with."""
    return demo.ids(
        lambda t: (
            t.status == Status.NEW
            and t.assignee_id is None
            and t.priority == Priority.NORMAL
            and t.category is None
        )
    )[0]


def kinds(demo: Demo, ticket_id: int, after: int) -> list[tuple[str, str | None]]:
    return [(e.kind, e.actor) for e in demo.events(ticket_id, after)]


async def act(ui: UI, ticket_id: int, key: str) -> None:
    """Put the cursor on the ticket and press the action's key."""
    await ui.goto(ticket_id)
    await ui.press(key)


async def test_claim(demo_ws: Demo) -> None:
    tid, start = new_ticket(demo_ws), demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, tid, "c")
        await ui.wait(lambda: f"claim: #{tid}" in ui.texts(), "the claim notice")
        await ui.settle()
        row = ui.tickets.rows[ui.tickets.cursor].ticket
        assert (row.id, row.status, row.assignee.address) == (tid, "open", ME)
        assert not ui.tickets.rows[ui.tickets.cursor].unread  # my own change is read
    assert kinds(demo_ws, tid, start) == [("assignment", ME), ("status", ME)]
    assignment, status = demo_ws.events(tid, start)
    assert assignment.data == {"from": None, "to": ME}
    assert status.data == {"from": "new", "to": "open"}


async def test_assign_to_a_provider_picked_from_the_list(demo_ws: Demo) -> None:
    tid, start = new_ticket(demo_ws), demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, tid, "a")
        await ui.choose("Sam", expect=OTHER)
        await ui.wait(lambda: f"assign: #{tid}" in ui.texts(), "the assign notice")
        await ui.settle()
        assert ui.tickets.current.assignee.address == OTHER
    (event,) = demo_ws.events(tid, start)
    assert (event.kind, event.actor, event.data) == ("assignment", ME, {"from": None, "to": OTHER})
    assert demo_ws.detail(tid).ticket.assignee.address == OTHER


async def test_status_and_priority(any_demo: Demo) -> None:
    tid, start = new_ticket(any_demo), any_demo.last_event_id()
    async with running(any_demo) as ui:
        await act(ui, tid, "s")
        await ui.choose("pending", expect="pending")
        await ui.wait(lambda: f"status: #{tid}" in ui.texts(), "the status notice")
        await ui.settle()
        await ui.press("p")
        await ui.choose("urgent", expect="urgent")
        await ui.wait(lambda: f"priority: #{tid}" in ui.texts(), "the priority notice")
        await ui.settle()
        row = ui.tickets.current
        assert (row.id, row.status, row.priority) == (tid, "pending", "urgent")
    status, priority = any_demo.events(tid, start)
    assert (status.kind, status.actor, status.data) == (
        "status",
        ME,
        {"from": "new", "to": "pending"},
    )
    assert (priority.kind, priority.data) == ("priority", {"from": "normal", "to": "urgent"})
    assert priority.version == status.version + 1


def categories(demo: Demo) -> list[str]:
    with demo.ws.db.session() as s:
        return sorted(c for c in s.scalars(select(Ticket.category).distinct()) if c)


async def test_category_existing_then_new(demo_ws: Demo) -> None:
    tid, start = new_ticket(demo_ws), demo_ws.last_event_id()
    existing = categories(demo_ws)[0]
    async with running(demo_ws) as ui:
        await act(ui, tid, "C")
        await ui.choose(existing, expect=existing)
        await ui.wait(lambda: f"category: #{tid}" in ui.texts(), "the category notice")
        await ui.settle()
        assert ui.tickets.current.category == existing

        await ui.press("C")
        await ui.choose("vendor")  # matches nothing in the list: the typed text is taken
        await ui.wait(lambda: ui.tickets.current.category == "vendor", "the new category")
        await ui.settle()
    first, second = demo_ws.events(tid, start)
    assert (first.kind, first.actor, first.data) == ("category", ME, {"from": None, "to": existing})
    assert (second.kind, second.data) == ("category", {"from": existing, "to": "vendor"})


async def test_new_category_that_prefixes_an_existing_one(demo_ws: Demo) -> None:
    """Regression: a typed new value that fuzzy-matched a listed one was swapped for it
    ('account' became 'accounts'; fixed in e9bf171)."""
    tid = new_ticket(demo_ws)
    existing = categories(demo_ws)[0]
    wanted = existing[:-1]  # e.g. "account" while "accounts" is in use
    async with running(demo_ws) as ui:
        await act(ui, tid, "C")
        await ui.choose(wanted)
        await ui.wait(lambda: ui.tickets.current.category is not None, "a category")
        await ui.settle()
    assert demo_ws.detail(tid).ticket.category == wanted


async def test_tags(demo_ws: Demo) -> None:
    tid, start = new_ticket(demo_ws), demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, tid, "t")
        await ui.answer("vpn Remote")
        await ui.wait(lambda: f"tags: #{tid}" in ui.texts(), "the tags notice")
        await ui.settle()
        assert ui.tickets.current.tags == ("remote", "vpn")
    (event,) = demo_ws.events(tid, start)
    assert (event.kind, event.actor) == ("tags", ME)
    assert event.data == {"added": ["remote", "vpn"], "removed": []}


async def test_internal_note_in_a_text_area_saved_with_ctrl_s(demo_ws: Demo) -> None:
    tid, start = new_ticket(demo_ws), demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, tid, "n")
        dialog = await ui.screen(NoteDialog)
        area = dialog.query_one(TextArea)
        await ui.wait(lambda: area.has_focus, "the note's text area")
        await ui.type("Called")
        await ui.press("enter")
        await ui.paste("them back.")
        await ui.wait(
            lambda: area.text == "Called\nthem back.", f"the note text, not {area.text!r}"
        )
        await ui.press("ctrl+s")
        await ui.wait(lambda: f"internal note: #{tid}" in ui.texts(), "the note notice")
        await ui.settle()
    (event,) = demo_ws.events(tid, start)
    assert (event.kind, event.actor) == ("note", ME)
    notes = [m for m in demo_ws.detail(tid).messages if m.direction == "note"]
    assert [(m.id, m.text, m.from_addr) for m in notes] == [
        (event.data["message"], "Called\nthem back.", ME)
    ]


async def test_merge_into_another_ticket(demo_ws: Demo) -> None:
    source, target = demo_ws.ids(
        lambda t: t.status == Status.NEW and t.merged_into_id is None and t.assignee_id is None
    )[:2]
    moved = [m.id for m in demo_ws.detail(source).messages]
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, source, "m")
        await ui.answer("nope", closes=False)  # not a number: the dialog says so and stays
        dialog = ui.app.screen
        await ui.wait(lambda: "ticket number" in plain(dialog.query_one("#text-error").content), "")
        await ui.answer(f"#{target}")
        await ui.wait(lambda: f"merge into: #{source}" in ui.texts(), "the merge notice")
        await ui.settle()
        assert ui.tickets.current.status == "closed"
    assert demo_ws.detail(source).ticket.merged_into == target
    assert kinds(demo_ws, source, start) == [("status", ME), ("merged", ME)]
    assert kinds(demo_ws, target, start) == [("merge", ME)]
    assert demo_ws.events(target, start)[0].data["from"] == source
    assert set(moved) <= {m.id for m in demo_ws.detail(target).messages}
    assert (target, "merged") in demo_ws.detail(source).links


async def test_merge_into_a_missing_ticket_says_so(demo_ws: Demo) -> None:
    tid, start = new_ticket(demo_ws), demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, tid, "m")
        await ui.answer("9999")
        await ui.wait(lambda: "there is no ticket #9999" in ui.texts("error"), "an error notice")
        await ui.settle()
    assert demo_ws.events(tid, start) == []


async def test_link_two_tickets(demo_ws: Demo) -> None:
    tid, other = demo_ws.ids()[2], demo_ws.ids()[5]
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, tid, "l")
        await ui.answer(f"#{other}")
        await ui.wait(lambda: f"link to: #{tid}" in ui.texts(), "the link notice")
        await ui.settle()
    assert kinds(demo_ws, tid, start) == [("link", ME)]
    assert kinds(demo_ws, other, start) == [("link", ME)]
    assert (other, "related") in demo_ws.detail(tid).links
    assert (tid, "related") in demo_ws.detail(other).links


async def test_release_a_quarantined_ticket(demo_ws: Demo) -> None:
    tid = new_ticket(demo_ws)
    with demo_ws.ws.db.write() as s:  # what ingestion does for a sender outside allowed_domains
        s.add(TicketFlag(ticket_id=tid, flag="quarantined", detail="sender domain evil.example"))
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await ui.filter("is:quarantined")
        assert ui.row_ids() == [tid]
        assert "⚠ " in ui.screen_lines()[1]
        await ui.press("R")
        await ui.wait(lambda: f"release: #{tid}" in ui.texts(), "the release notice")
        await ui.wait(lambda: ui.row_ids() == [], "the ticket to leave the quarantine view")
        await ui.settle()
        assert "no tickets match" in ui.screen_lines()[1]
    (event,) = demo_ws.events(tid, start)
    assert (event.kind, event.actor) == ("released", ME)
    assert event.data == {"flag": "quarantined", "detail": "sender domain evil.example"}
    assert "quarantined" not in demo_ws.detail(tid).flag_details


async def test_release_of_a_ticket_not_quarantined_is_an_error(demo_ws: Demo) -> None:
    tid, start = new_ticket(demo_ws), demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await act(ui, tid, "R")
        await ui.wait(lambda: ui.texts("error"), "an error notice")
        assert ui.texts("error") == [f"#{tid}: ticket #{tid} is not quarantined"]
    assert demo_ws.events(tid, start) == []


# ------------------------------------------------------------------ conflicts


async def conflict(ui: UI, demo: Demo, tid: int) -> ConflictDialog:
    """Open the status picker, let another provider change the priority, pick a status."""
    await act(ui, tid, "s")
    await ui.screen(ChoiceDialog)  # the picker is open: the app acts on the version it read
    demo.act_as(OTHER, services.set_priority, tid, Priority.URGENT)
    await ui.choose("pending", expect="pending")
    return await ui.screen(ConflictDialog)


def dialog_text(dialog: ConflictDialog) -> str:
    return "\n".join(plain(w.content) for w in dialog.query(Static))


async def test_conflict_reapply_keeps_both_changes(any_demo: Demo) -> None:
    tid, start = new_ticket(any_demo), any_demo.last_event_id()
    version = any_demo.detail(tid).ticket.version
    async with running(any_demo) as ui:
        dialog = await conflict(ui, any_demo, tid)
        text = dialog_text(dialog)
        assert "Your status was not applied: another change came first" in text
        assert f"#{tid} changed since you looked (version {version} → {version + 1}):" in text
        assert f"v{version + 1} priority by {OTHER}: normal → urgent" in text
        await ui.press("r")
        await ui.wait(lambda: f"status: #{tid}" in ui.texts(), "the status notice")
        await ui.settle()
        await ui.wait(lambda: ui.tickets.current.status == "pending", "the row updated")
        assert ui.tickets.current.priority == "urgent"
    assert kinds(any_demo, tid, start) == [("priority", OTHER), ("status", ME)]
    ticket = any_demo.detail(tid).ticket
    assert (ticket.priority, ticket.status, ticket.version) == ("urgent", "pending", version + 2)


async def test_conflict_drop_leaves_the_other_change_alone(any_demo: Demo) -> None:
    tid, start = new_ticket(any_demo), any_demo.last_event_id()
    async with running(any_demo) as ui:
        await conflict(ui, any_demo, tid)
        await ui.press("d")
        await ui.wait(lambda: f"status dropped for #{tid}" in ui.texts(), "the dropped notice")
        await ui.settle()
        await ui.wait(lambda: ui.tickets.current.priority == "urgent", "the live refresh")
        assert ui.tickets.current.status == "new"
    assert kinds(any_demo, tid, start) == [("priority", OTHER)]
    assert any_demo.detail(tid).ticket.status == "new"


async def test_conflict_on_marked_tickets_names_only_the_changed_one(demo_ws: Demo) -> None:
    first, second = demo_ws.ids(lambda t: t.status == Status.NEW)[:2]
    start = demo_ws.last_event_id()
    async with running(demo_ws) as ui:
        await ui.filter("status:new")
        await ui.goto(first)
        await ui.press("v")
        await ui.goto(second)
        await ui.press("v")
        await ui.wait(lambda: len(ui.tickets.marked) == 2, "two marks")
        await ui.press("s")
        await ui.screen(ChoiceDialog)
        demo_ws.act_as(OTHER, services.claim, second)
        await ui.choose("on-hold", expect="on-hold")
        dialog = await ui.screen(ConflictDialog)
        text = dialog_text(dialog)
        assert f"#{second} changed" in text and f"#{first} changed" not in text
        assert f"assignment by {OTHER}: - → {OTHER}" in text
        await ui.press("r")
        await ui.wait(lambda: not ui.tickets.marked, "marks cleared")
        await ui.settle()
    assert kinds(demo_ws, first, start) == [("status", ME)]
    assert kinds(demo_ws, second, start) == [
        ("assignment", OTHER),
        ("status", OTHER),
        ("status", ME),
    ]
    assert demo_ws.detail(second).ticket.status == "on-hold"


def test_a_change_reads_as_one_line_with_its_reason() -> None:
    assert describe_change("status", None, {"from": "new", "to": "open"}) == (
        "status by deskq: new → open"
    )
    reason = {"from": "new", "to": "resolved", "reason": "its email was read: #12"}
    assert describe_change("status", "bob@corp", reason) == (
        "status by bob@corp: new → resolved (its email was read: #12)"
    )
    assert describe_change("link", None, {"other": 5, "kind": "stand-in"}) == (
        "link by deskq: kind stand-in, other 5"
    )
