"""Access per queue in the terminal UI: a queue with other providers is not shown."""

from __future__ import annotations

from sqlalchemy import select

from store import access
from store.models import Queue, Ticket
from tests.tui.conftest import Demo, running


async def test_a_queue_of_other_providers_is_hidden_everywhere(demo_ws: Demo) -> None:
    with demo_ws.ws.db.write() as s:  # HR gets a provider of its own; alex is not one
        access.add(s, "dana@corp.example", ["hr"], name="Dana")
        hr = s.scalars(select(Queue).where(Queue.key == "hr")).one()
        hr_ids = set(s.scalars(select(Ticket.id).where(Ticket.queue_id == hr.id)))
        hr_name = hr.name
    assert hr_ids
    async with running(demo_ws) as ui:
        shown = set(ui.row_ids())
        assert shown and not shown & hr_ids
        assert hr_name not in ui.view_bar() and "IT" in ui.view_bar()
        await ui.pilot.press("slash", *"queue:hr", "enter")
        await ui.wait(lambda: ui.row_ids() == [], "an empty list for queue:hr")
