"""Pictures of the screens (pytest-textual-snapshot): queue, ticket, help, conflict dialog.

The dataset is built with the services at fixed times and the UI's clock is frozen
(``datetime`` in the two modules that compute ages), so every age, date and history
line renders the same on every run. Update the pictures with ``--snapshot-update``
after a deliberate change, and look at them (``snapshot_report.html``) before committing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from mail.demo_mail import PNG
from store import services
from store.config import load_settings
from store.models import Attachment, Blob, Direction, Message, Priority, Queue, Status
from store.pages import mark_read
from store.workspace import open_workspace
from tests.tui.conftest import ME, OTHER, SIZE, UI, Demo, running
from tui import demo
from tui.app import DeskqApp, make_app
from tui.dialogs import ChoiceDialog, ConflictDialog, HelpScreen
from tui.ticket_screen import TicketScreen

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
KIM = "kim.provider@corp.example"


class FrozenDatetime(datetime):
    """``datetime`` whose ``now()`` is always :data:`NOW` (ages render the same every run)."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return NOW if tz is None else NOW.astimezone(tz)


# (queue, subject, requester name, address, opened ago, priority, [(who, action, *args)])
TICKETS: list[tuple[str, str, str, str, timedelta, Priority, list[tuple[Any, ...]]]] = [
    ("it", "VPN drops every 10 minutes", "Amara Okafor", "amara.okafor", timedelta(days=9),
     Priority.NORMAL, [(ME, services.claim), (ME, services.set_category, "network"),
                       (ME, services.set_status, Status.RESOLVED)]),
    ("hr", "Question about parental leave", "Bjorn Lindqvist", "bjorn.lindqvist",
     timedelta(days=6), Priority.NORMAL, [(OTHER, services.claim),
                                          (OTHER, services.set_status, Status.PENDING)]),
    ("facilities", "Heating in room 2.14", "Chen Wei", "chen.wei", timedelta(days=3),
     Priority.HIGH, [(KIM, services.claim), (KIM, services.set_status, Status.ON_HOLD)]),
    ("it", "Laptop will not boot", "Dolores Ruiz", "dolores.ruiz", timedelta(days=2),
     Priority.URGENT, []),
    ("it", "Password reset for SAP", "Emeka Nwosu", "emeka.nwosu", timedelta(hours=20),
     Priority.NORMAL, [(ME, services.claim), (ME, services.set_tags, ["sap", "accounts"])]),
    ("hr", "Payslip shows wrong tax code", "Fatima Zahra", "fatima.zahra", timedelta(hours=5),
     Priority.LOW, []),
    ("facilities", "Broken chair", "", "hugo.martin", timedelta(hours=3), Priority.NORMAL, []),
    ("it", "Printer on 3rd floor jams", "Grace Kim", "grace.kim", timedelta(minutes=40),
     Priority.HIGH, [(ME, services.add_note, "Same as last month; see the runbook page.")]),
]  # fmt: skip

FIRST = "The printer near the kitchen jams on every duplex job. Error code 13.B2.D3."
REPLY = (
    "Still jamming this morning, now on single pages too.\n"
    "\n"
    "On Mon, 2 Mar 2026 at 09:00, IT Help wrote:\n"
    "> Could you send the error code?\n"
    "> Thanks, IT Help\n"
)


def seed(ws: Any) -> None:
    """The eight tickets above, their mail, triage and read marks, all at fixed times."""
    for key, subject, name, local, ago, prio, steps in TICKETS:
        at = NOW - ago
        with ws.db.write() as s:
            queue = s.query(Queue).filter_by(key=key).one()
            address = f"{local}@corp.example"
            requester = services.get_or_create_person(s, address, name)
            ticket = services.open_ticket(
                s, queue=queue, requester=requester, subject=subject, at=at, priority=prio
            )
            s.flush()
            body = FIRST if "Printer" in subject else f"Hi,\n\n{subject}.\n\nThanks,\n{name}"
            first = message(ticket.id, address, subject, at, body)
            s.add(first)
            if "Printer" in subject:
                s.flush()
                digest = hashlib.sha256(PNG).hexdigest()
                s.add(Blob(sha256=digest, size=len(PNG), compression="none", data=PNG))
                s.flush()  # the blob before the attachment that refers to it
                s.add(
                    Attachment(
                        message_id=first.id,
                        filename="screenshot.png",
                        media_type="image/png",
                        size=len(PNG),
                        sha256=digest,
                    )
                )
                s.add(
                    message(ticket.id, address, f"Re: {subject}", at + timedelta(minutes=20), REPLY)
                )
            tid = ticket.id
        for who, action, *args in steps:
            Demo(ws, Path()).act_as(who, action, tid, *args)
    with ws.db.write() as s:
        me = services.get_or_create_person(s, ME, provider=True)
        for tid in (1, 2, 3, 5):
            mark_read(s, me.id, tid, services.current_version(s, tid))


def message(tid: int, address: str, subject: str, at: datetime, body: str) -> Message:
    return Message(
        ticket_id=tid,
        direction=Direction.INBOUND,
        from_addr=address,
        to_addrs="it-help@corp.example",
        subject=subject,
        date=at,
        created_at=at,
        text_body=body,
        threaded_by="new ticket" if not subject.startswith("Re:") else "In-Reply-To",
    )


@pytest.fixture
def snap_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Demo]:
    """A fixed workspace (no mail polled) with a frozen clock for the UI and the services."""
    monkeypatch.setattr("tui.ticket_list.datetime", FrozenDatetime)
    monkeypatch.setattr("tui.ticket_screen.datetime", FrozenDatetime)
    monkeypatch.setattr("store.services.utcnow", lambda: NOW)
    root = tmp_path / "snap"
    root.mkdir()
    config = root / "config.toml"
    config.write_text(demo.demo_config(root), encoding="utf-8")
    ws = open_workspace(load_settings(config))
    for address, name in demo.DEMO_PROVIDERS:
        with ws.db.write() as s:
            services.get_or_create_person(s, address, name, provider=True)
    seed(ws)
    yield Demo(ws, root)
    ws.close()


@pytest.fixture
def app(snap_demo: Demo) -> DeskqApp:
    return make_app(snap_demo.ws, poll=False, live_interval=0.2)


async def loaded(pilot: Pilot[None]) -> UI:
    ui = UI(pilot.app, pilot)  # type: ignore[arg-type]
    await ui.wait(lambda: len(pilot.app.screen_stack) > 1, "the queue screen")
    await ui.loaded()
    await ui.wait(lambda: pilot.app.cursor is not None, "the live feed's first look")
    return ui


def test_queue_screen(snap_compare: Any, app: DeskqApp) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        ui = await loaded(pilot)
        await ui.press("j")
        await ui.wait(lambda: ui.tickets.cursor == 1, "the cursor on the second row")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_queue_screen_small(snap_compare: Any, app: DeskqApp) -> None:
    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded)


def test_ticket_screen(snap_compare: Any, app: DeskqApp) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        ui = await loaded(pilot)
        await ui.press("enter")
        screen = await ui.screen(TicketScreen)
        await ui.wait(lambda: screen.detail is not None, "the conversation")
        await ui.settle()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare: Any, app: DeskqApp) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        ui = await loaded(pilot)
        await ui.press("question_mark")
        await ui.screen(HelpScreen)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_conflict_dialog(snap_compare: Any, app: DeskqApp, snap_demo: Demo) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        ui = await loaded(pilot)
        await ui.goto(4)  # "Laptop will not boot": new, urgent, nobody's
        await ui.press("s")
        await ui.screen(ChoiceDialog)
        snap_demo.act_as(OTHER, services.set_priority, 4, Priority.HIGH)
        await ui.choose("pending", expect="pending")
        await ui.screen(ConflictDialog)
        await ui.wait(lambda: ui.tickets.current.priority == "high", "the live refresh behind")
        await ui.settle(ignore=frozenset({"triage"}))  # the action waits on the dialog

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_snapshot_data_is_what_the_pictures_show(snap_demo: Demo) -> None:
    """The seeded workspace itself, so a changed picture is not mistaken for changed data."""
    async with running(snap_demo) as ui:
        assert ui.row_ids() == [8, 7, 6, 5, 4, 3, 2, 1]
        rows = ui.screen_lines()[1:9]
        ages = [re.search(r" (\d+[mhdwy]) ", row).group(1) for row in rows]  # type: ignore[union-attr]
        assert ages == ["40m", "3h", "5h", "20h", "2d", "3d", "6d", "9d"]
