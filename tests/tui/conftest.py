"""Driving the terminal UI as a person would: a demo workspace, the app, conditions to wait on.

The workspace is built the way ``deskq demo`` builds one (demo Maildir, the real poller,
the demo triage), once per session into a template; each test gets its own copy of
that template's files, so a test costs a file copy instead of a full ingestion. Tests
that must also prove PostgreSQL take ``any_demo``, which builds the same workspace on
the backend of ``db_url`` (see ``tests/conftest.py``).

There is no pytest-asyncio in the venv: ``async def`` tests here are run with
``asyncio.run`` by :func:`pytest_pyfunc_call` below. Tests never sleep for a fixed
time: :meth:`UI.wait` polls a condition (letting the app and its workers run) until it
holds or a timeout says what was expected.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import sqlite3
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from sqlalchemy import select
from textual import events
from textual.geometry import Region
from textual.keys import REPLACED_KEYS, _character_to_key, _get_unicode_name_from_key
from textual.notifications import Notification, Notify
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input, OptionList, Static

from mail.poller import poll_once
from store import services
from store.config import load_settings
from store.models import Person, Ticket, utcnow
from store.pages import change_cursor
from store.views import EventView, TicketDetail, ticket_detail
from store.workspace import Workspace, open_workspace
from tui import demo
from tui.app import DeskqApp, make_app
from tui.dialogs import ChoiceDialog, TextDialog
from tui.queue_screen import QueueScreen
from tui.ticket_list import TicketList

ME = demo.DEMO_ME
OTHER = "sam.provider@corp.example"
DEMO_COUNT = 60
SIZE = (100, 30)
LIVE_INTERVAL = 0.2
TIMEOUT = 5.0


# ------------------------------------------------------------------ async tests


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (what pytest-asyncio would do)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


# ------------------------------------------------------------------ the workspace


def build_demo(root: Path, url: str | None = None) -> Workspace:
    """A demo workspace in ``root`` as ``deskq demo`` makes it (optionally on ``url``)."""
    config = demo.create(root, count=DEMO_COUNT)
    if url is not None:
        text = config.read_text(encoding="utf-8")
        start = text.index('url = "sqlite:///')
        end = text.index("\n", start)
        config.write_text(text[:start] + f'url = "{url}"' + text[end:], encoding="utf-8")
    ws = open_workspace(load_settings(config))
    statuses = poll_once(ws)
    assert [s.last_error for s in statuses] == [""], statuses
    demo.seed_activity(ws)
    return ws


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo workspace (SQLite) built per session; tests copy it."""
    root = tmp_path_factory.mktemp("demo-template")
    build_demo(root).close()
    return root


def copy_demo(template: Path, root: Path) -> Workspace:
    """A private copy of the template workspace in ``root`` (its config points there)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template / "Maildir", root / "Maildir")
    src = sqlite3.connect(template / "deskq.db")
    dst = sqlite3.connect(root / "deskq.db")
    with dst:
        src.backup(dst)  # a consistent copy, whatever sits in the WAL
    src.close()
    dst.close()
    config = root / "config.toml"
    config.write_text(demo.demo_config(root), encoding="utf-8")
    return open_workspace(load_settings(config))


@dataclass
class Demo:
    """A demo workspace and the store-side helpers tests check the UI against."""

    ws: Workspace
    root: Path

    def detail(self, ticket_id: int) -> TicketDetail:
        """The ticket as the database has it now."""
        with self.ws.db.session() as s:
            found = ticket_detail(s, ticket_id)
        assert found is not None, f"no ticket #{ticket_id}"
        return found

    def events(self, ticket_id: int, after: int = 0) -> list[EventView]:
        """The ticket's events with an id above ``after``."""
        return [e for e in self.detail(ticket_id).events if e.id > after]

    def last_event_id(self) -> int:
        """The newest event id (to find what an action added)."""
        with self.ws.db.session() as s:
            return change_cursor(s)

    def ids(self, where: Callable[[Ticket], bool] = lambda t: True) -> list[int]:
        """Ticket ids (newest first, the queue's default order) matching ``where``."""
        with self.ws.db.session() as s:
            tickets = s.scalars(select(Ticket).order_by(Ticket.id.desc())).all()
            return [t.id for t in tickets if where(t)]

    def person_id(self, address: str) -> int:
        with self.ws.db.session() as s:
            pid = s.scalar(select(Person.id).where(Person.address == address))
        assert pid is not None
        return pid

    def act_as(self, address: str, action: Callable[..., Any], ticket_id: int, *args: Any) -> None:
        """Change a ticket behind the app's back, as another provider, via the services."""
        with self.ws.db.write() as s:
            who = services.get_or_create_person(s, address, provider=True)
            action(s, ticket_id, services.current_version(s, ticket_id), who, *args)

    def deliver(self, subject: str, body: str, sender: str = "newcomer@corp.example") -> bytes:
        """Drop a new email into the demo Maildir (not polled yet); returns its bytes."""
        msg = EmailMessage(policy=SMTP)
        msg["From"] = f"New Comer <{sender}>"
        msg["To"] = "it-help@corp.example"
        msg["Subject"] = subject
        msg["Date"] = format_datetime(utcnow())
        msg["Message-ID"] = make_msgid(domain="test.example")
        msg.set_content(body)
        raw = msg.as_bytes()
        name = f"{time.time_ns()}.deskq-test"
        tmp = self.root / "Maildir" / "tmp" / name
        tmp.write_bytes(raw)
        tmp.rename(self.root / "Maildir" / "new" / name)
        return raw

    def poll(self) -> None:
        """One poller pass, as ``deskq poll --once`` (or the app's poller) does it."""
        statuses = poll_once(self.ws)
        assert [s.last_error for s in statuses] == [""], statuses


@pytest.fixture
def demo_ws(demo_template: Path, tmp_path: Path) -> Iterator[Demo]:
    """A private demo workspace on SQLite."""
    ws = copy_demo(demo_template, tmp_path / "ws")
    yield Demo(ws, tmp_path / "ws")
    ws.close()


@pytest.fixture
def any_demo(db_url: str, demo_template: Path, tmp_path: Path) -> Iterator[Demo]:
    """A private demo workspace on each backend (SQLite copy; PostgreSQL built afresh)."""
    root = tmp_path / "ws"
    if db_url.startswith("sqlite"):
        ws = copy_demo(demo_template, root)
    else:
        root.mkdir()
        ws = build_demo(root, db_url)
    yield Demo(ws, root)
    ws.close()


@pytest.fixture
def downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private downloads folder the attachment dialog offers by default."""
    folder = tmp_path / "downloads"
    monkeypatch.setenv("DESKQ_DOWNLOADS", str(folder))
    return folder


# ------------------------------------------------------------------ driving the app


def plain(content: object) -> str:
    """The text of a Static's content (a Rich Text or a str)."""
    return content.plain if isinstance(content, Text) else str(content)


def widget_lines(widget: Widget) -> list[str]:
    """What ``widget`` shows on screen, line by line (as the compositor gets it)."""
    width, height = widget.size
    return [strip.text for strip in widget.render_lines(Region(0, 0, width, height))]


def key_event(key: str, sender: DeskqApp) -> events.Key:
    """The Key event ``pilot.press(key)`` sends: same key name, same character."""
    if len(key) == 1 and not key.isalnum():
        key = _character_to_key(key)
    try:
        char: str | None = unicodedata.lookup(
            _get_unicode_name_from_key(REPLACED_KEYS.get(key, key))
        )
    except KeyError:
        char = key if len(key) == 1 else None
    event = events.Key(key, char)
    event.set_sender(sender)
    return event


@dataclass
class UI:
    """The running app, its pilot, and every notice it showed."""

    app: DeskqApp
    pilot: Pilot[None]
    notices: list[Notification] = field(default_factory=list)

    # -------------------------------------------------------------- where we are

    @property
    def queue(self) -> QueueScreen:
        return next(s for s in self.app.screen_stack if isinstance(s, QueueScreen))

    @property
    def tickets(self) -> TicketList:
        return self.queue.query_one(TicketList)

    def row_ids(self) -> list[int]:
        return [r.ticket.id for r in self.tickets.rows]

    def status_line(self) -> str:
        return plain(self.queue.query_one("#status-line", Static).content)

    def view_bar(self) -> str:
        return plain(self.queue.query_one("#view-bar", Static).content)

    def current_view(self) -> str | None:
        """The name of the view the view bar highlights (None: a free filter)."""
        bar = self.queue.query_one("#view-bar", Static).content
        assert isinstance(bar, Text)
        for span in bar.spans:
            if "reverse" in str(span.style):
                label = bar.plain[span.start : span.end].strip()
                return None if label == "filter" else label.split(":", 1)[-1]
        return None

    def screen_lines(self) -> list[str]:
        """The rows of the ticket list as the user sees them (header first)."""
        lst = self.tickets
        return [lst.render_line(y).text for y in range(lst.size.height)]

    def texts(self, severity: str | None = None) -> list[str]:
        """Every notice's text so far (optionally of one severity)."""
        return [n.message for n in self.notices if severity in (None, n.severity)]

    # -------------------------------------------------------------- waiting

    async def wait(
        self, condition: Callable[[], object], what: str, timeout: float = TIMEOUT
    ) -> Any:
        """Let the app run until ``condition()`` is true; fail saying ``what`` was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; screen={self.app.screen!r}"
                    f" notices={self.texts()}"
                )
            # Let pending messages be handled, and thread workers run, then look again.
            await self.pilot.pause(0.01)

    async def settle(self, timeout: float = TIMEOUT, ignore: frozenset[str] = frozenset()) -> None:
        """Wait until no worker but the live-feed tick (and the ``ignore`` groups, e.g. one
        waiting on an open dialog) is running, then until their messages are handled.

        Not ``app.workers.wait_for_complete()``: the live feed starts a worker every tick,
        and a triage worker waiting on a dialog never completes until the dialog closes.
        """
        skip = {"live", *ignore}

        def quiet() -> bool:
            return not [w for w in self.app.workers if w.is_running and w.group not in skip]

        await self.wait(quiet, "background work to finish", timeout)
        await self.pilot.pause(0)

    async def loaded(self) -> None:
        """Wait until the queue shows its rows and knows its count."""
        await self.wait(
            lambda: self.tickets.loaded and not self.tickets.fetching_first and self.tickets.total,
            "the queue to load",
        )
        await self.settle()

    async def screen(self, kind: type) -> Any:
        """Wait until the screen on top is a ``kind``, mounted with its widgets; return it."""

        def ready() -> Any:
            screen = self.app.screen
            if isinstance(screen, kind) and screen.is_mounted and screen.children:
                return screen
            return None

        screen = await self.wait(ready, f"a {kind.__name__}")
        await self.pilot.pause(0)
        return screen

    # -------------------------------------------------------------- doing

    async def press(self, *keys: str) -> None:
        """Press keys one after the other, as ``pilot.press`` does.

        Unlike ``pilot.press`` this does not wait for the whole process to look idle after
        every key (~0.1 s a key with the live feed running): each key is handed to the app
        and handled, and the tests then wait for the state they expect.
        """
        for key in keys:
            self.app.post_message(key_event(key, self.app))
            await self.pilot.pause(0)

    async def repeat(self, key: str, times: int) -> None:
        """Press a key ``times`` times in a burst (as key repeat does)."""
        for _ in range(times):
            self.app.post_message(key_event(key, self.app))
        await self.pilot.pause(0)

    async def type(self, text: str) -> None:
        """Type ``text`` key by key into whatever has focus."""
        await self.press(*text)

    async def paste(self, text: str) -> None:
        """Paste ``text`` into whatever has focus (as a terminal's bracketed paste does)."""
        assert self.app.focused is not None, "nothing has focus to paste into"
        self.app.post_message(events.Paste(text))  # the app hands it to the focused widget
        await self.pilot.pause(0)

    async def choose(self, text: str, expect: str | None = None) -> None:
        """In the open ChoiceDialog, type ``text`` and press enter.

        ``expect``: the value (option id) that must be highlighted before enter.
        """
        dialog = await self.screen(ChoiceDialog)
        box = dialog.query_one("#choice-filter", Input)
        await self.wait(lambda: box.has_focus, "focus")
        if text:
            await self.paste(text)
            await self.wait(lambda: box.value == text, f"{text!r} in the dialog")
        if expect is not None:
            options = dialog.query_one(OptionList)

            def highlighted() -> str | None:
                if options.highlighted is None or not options.option_count:
                    return None
                return options.get_option_at_index(options.highlighted).id

            await self.wait(lambda: highlighted() == expect, f"option {expect!r} highlighted")
        await self.press("enter")
        await self.wait(lambda: self.app.screen is not dialog, "the dialog to close")

    async def answer(self, text: str, *, closes: bool = True) -> None:
        """In the open TextDialog, replace the value with ``text`` and press enter.

        ``closes``: wait for the dialog to close (False: it is expected to refuse the text).
        """
        dialog = await self.screen(TextDialog)
        box = dialog.query_one("#text-value", Input)
        await self.wait(lambda: box.has_focus, "the text box to have focus")
        box.value = ""
        await self.paste(text)
        await self.wait(lambda: box.value == text, f"{text!r} in the dialog")
        await self.press("enter")
        if closes:
            await self.wait(lambda: self.app.screen is not dialog, "the dialog to close")

    async def filter(self, text: str, *, typed: bool = False) -> None:
        """``/``, type (or paste) the filter, enter; waits for the list to show it."""
        await self.press("slash")
        box = self.queue.query_one("#filter", Input)
        await self.wait(lambda: box.has_focus, "the filter bar")
        box.value = ""
        await (self.type(text) if typed else self.paste(text))
        await self.wait(lambda: box.value == text, f"{text!r} in the filter bar")
        generation = self.tickets.generation
        await self.press("enter")
        await self.wait(lambda: self.tickets.generation > generation, "the filter to apply")
        await self.loaded()
        if self.app.focused is None:
            # The known bug (see test_list_has_focus_after_a_filter_is_submitted): after
            # enter nothing has focus and j/k/v are dead; a person presses tab.
            await self.press("tab")
            await self.wait(lambda: self.tickets.has_focus, "tab to focus the list")

    async def goto(self, ticket_id: int) -> None:
        """Put the cursor on ``ticket_id`` with j/k, as a person would."""
        ids = self.row_ids()
        assert ticket_id in ids, f"#{ticket_id} is not in the list"
        delta = ids.index(ticket_id) - self.tickets.cursor
        await self.repeat("j" if delta > 0 else "k", abs(delta))
        await self.wait(lambda: self.tickets.current.id == ticket_id, f"cursor on #{ticket_id}")


@asynccontextmanager
async def running(
    demo_ws: Demo, size: tuple[int, int] = SIZE, *, notifications: bool = False
) -> AsyncIterator[UI]:
    """The app over the workspace, as the CLI builds it (no poller), with its queue loaded."""
    app = make_app(demo_ws.ws, poll=False, live_interval=LIVE_INTERVAL)
    notices: list[Notification] = []

    def hook(message: object) -> None:
        if isinstance(message, Notify):
            notices.append(message.notification)

    async with app.run_test(size=size, message_hook=hook, notifications=notifications) as pilot:
        ui = UI(app, pilot, notices)
        await ui.wait(lambda: any(isinstance(s, QueueScreen) for s in app.screen_stack), "queue")
        await ui.loaded()
        yield ui
        await ui.settle()
