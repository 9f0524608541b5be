"""Two providers, two TUI instances, one database (SQLite and PostgreSQL).

Proves what a team relies on: a change made in one instance shows in the other
within 2 s without a keypress, and acting on a ticket someone else changed first
brings up the conflict dialog (re-apply or drop), never a silent overwrite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from store import services
from store.config import parse_settings
from store.models import Event, Priority, Queue, Status, Ticket
from store.workspace import Workspace, open_workspace
from tui.app import DeskqApp, make_app
from tui.dialogs import ChoiceDialog, ConflictDialog
from tui.ticket_list import TicketList

LIVE_LIMIT = 2.0  # seconds: the promise for changes made elsewhere


def _settings(url: str, me: str, tmp: Path):
    text = f'''
me = "{me}"
[database]
url = "{url}"
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
'''
    return parse_settings(text, tmp / f"{me}.toml")


@pytest.fixture
def team(db_url: str, tmp_path: Path) -> Iterator[tuple[Workspace, Workspace]]:
    alice = open_workspace(_settings(db_url, "alice@corp.example", tmp_path))
    bob = open_workspace(_settings(db_url, "bob@corp.example", tmp_path))
    with alice.db.write() as s:
        queue = s.scalars(select(Queue).where(Queue.key == "it")).one()
        requester = services.get_or_create_person(s, "emp@corp.example", "Em Ployee")
        for subject in ("VPN down", "Printer jam", "New laptop"):
            services.open_ticket(s, queue=queue, requester=requester, subject=subject)
    yield alice, bob
    alice.close()
    bob.close()


async def until(pilot_app: DeskqApp, check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Wait until ``check()`` holds; returns the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def rows(app: DeskqApp) -> dict[int, object]:
    return {r.ticket.id: r.ticket for r in app.screen.query_one(TicketList).rows}


def ticket(ws: Workspace, tid: int) -> Ticket:
    with ws.db.session() as s:
        t = s.get_one(Ticket, tid)
        s.expunge(t)
        return t


def kinds(ws: Workspace, tid: int) -> list[tuple[str, str | None]]:
    from store.models import Person

    with ws.db.session() as s:
        return [
            (k, a)
            for k, a in s.execute(
                select(Event.kind, Person.address)
                .outerjoin(Person, Person.id == Event.actor_id)
                .where(Event.ticket_id == tid)
                .order_by(Event.id)
            )
        ]


async def choose(app: DeskqApp, pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    await until(app, lambda: isinstance(app.screen, ChoiceDialog))
    await pilot.press(*text, "enter")


def test_change_in_one_instance_shows_in_the_other(team: tuple[Workspace, Workspace]) -> None:
    alice, bob = team

    async def scenario() -> float:
        app_a = make_app(alice, live_interval=0.25)
        app_b = make_app(bob, live_interval=0.25)
        async with app_a.run_test(size=(100, 30)) as pa, app_b.run_test(size=(100, 30)) as pb:
            await until(app_a, lambda: len(rows(app_a)) == 3)
            await until(app_b, lambda: len(rows(app_b)) == 3)
            # bob claims the ticket under his cursor (the newest, #3)
            await pb.press("c")
            await until(app_b, lambda: ticket(bob, 3).assignee_id is not None)
            committed = time.monotonic()
            await until(
                app_a,
                lambda: getattr(rows(app_a)[3], "assignee", None) is not None,
                timeout=LIVE_LIMIT + 1,
            )
            seen_after = time.monotonic() - committed
            # a brand-new ticket arrives (as the poller would write it) and appears in both
            with alice.db.write() as s:
                queue = s.scalars(select(Queue)).one()
                who = services.get_or_create_person(s, "new@corp.example")
                services.open_ticket(s, queue=queue, requester=who, subject="Screen flickers")
            await until(app_a, lambda: 4 in rows(app_a), timeout=LIVE_LIMIT + 1)
            await until(app_b, lambda: 4 in rows(app_b), timeout=LIVE_LIMIT + 1)
            assert any("Screen flickers" in str(n.message) for n in app_b._notifications)
            await pa.pause()
            return seen_after

    seen_after = asyncio.run(scenario())
    assert seen_after < LIVE_LIMIT
    assert ticket(alice, 3).assignee_id is not None


@pytest.mark.parametrize("decision", ["r", "d"])
def test_conflict_is_shown_then_reapplied_or_dropped(
    team: tuple[Workspace, Workspace], decision: str
) -> None:
    alice, bob = team

    async def scenario() -> None:
        app_a = make_app(alice, live_interval=0.25)
        app_b = make_app(bob, live_interval=0.25)
        async with app_a.run_test(size=(100, 30)) as pa, app_b.run_test(size=(100, 30)) as pb:
            await until(app_a, lambda: len(rows(app_a)) == 3)
            await until(app_b, lambda: len(rows(app_b)) == 3)
            # alice starts changing the status of #3 ...
            await pa.press("s")
            await until(app_a, lambda: isinstance(app_a.screen, ChoiceDialog))
            # ... while bob raises its priority first
            await pb.press("p")
            await choose(app_b, pb, "urgent")
            await until(app_b, lambda: ticket(bob, 3).priority == Priority.URGENT)
            # alice now picks "pending": her version is stale
            await pa.press(*"pending", "enter")
            await until(app_a, lambda: isinstance(app_a.screen, ConflictDialog))
            shown = str(app_a.screen.query_one(".conflict-changes Static").render())
            assert "priority by bob@corp.example" in shown
            assert "normal → urgent" in shown
            await pa.press(decision)
            await until(app_a, lambda: not isinstance(app_a.screen, ConflictDialog))
            await app_a.workers.wait_for_complete()
            await pa.pause()

    asyncio.run(scenario())
    t = ticket(alice, 3)
    assert t.priority == Priority.URGENT  # bob's change is never overwritten
    if decision == "r":
        assert t.status == Status.PENDING
        assert kinds(alice, 3)[-2:] == [
            ("priority", "bob@corp.example"),
            ("status", "alice@corp.example"),
        ]
    else:
        assert t.status == Status.NEW
        assert kinds(alice, 3)[-1] == ("priority", "bob@corp.example")


@pytest.mark.postgres
def test_on_postgresql_a_commit_elsewhere_shows_at_once_through_notify(
    pg_url: str, tmp_path: Path
) -> None:
    """With LISTEN/NOTIFY the periodic look is not needed: with it set to a minute,
    a change committed elsewhere still shows within a fraction of a second."""
    alice = open_workspace(_settings(pg_url, "alice@corp.example", tmp_path))
    bob = open_workspace(_settings(pg_url, "bob@corp.example", tmp_path))
    with bob.db.write() as s:
        queue = s.scalars(select(Queue)).one()
        requester = services.get_or_create_person(s, "emp@corp.example", "Em Ployee")
        tid = services.open_ticket(s, queue=queue, requester=requester, subject="VPN down").id

    async def scenario() -> tuple[float, float]:
        app = make_app(alice, live_interval=60)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(app, lambda: tid in rows(app))
            assert app.listener is not None
            await until(app, app.listener.listening.is_set)
            with bob.db.write() as s:
                me = services.get_or_create_person(s, "bob@corp.example", provider=True)
                services.claim(s, tid, 1, me)
            committed = time.monotonic()
            await until(app, lambda: getattr(rows(app)[tid], "assignee", None) is not None)
            changed_after = time.monotonic() - committed
            with bob.db.write() as s:  # a new ticket, as the poller writes it
                who = services.get_or_create_person(s, "new@corp.example")
                queue = s.scalars(select(Queue)).one()
                services.open_ticket(s, queue=queue, requester=who, subject="Screen flickers")
            committed = time.monotonic()
            await until(app, lambda: len(rows(app)) == 2)
            created_after = time.monotonic() - committed
            await pilot.pause()
        return changed_after, created_after

    try:
        changed_after, created_after = asyncio.run(scenario())
    finally:
        alice.close()
        bob.close()
    print(f"NOTIFY refresh: change {changed_after:.3f} s, new ticket {created_after:.3f} s")
    # With no NOTIFY the next look would be 60 s away: 5 s proves the push path.
    assert changed_after < 5 and created_after < 5
