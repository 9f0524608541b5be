"""The deskq terminal UI: one app factory for the CLI, ``textual serve`` and the tests."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from store.config import Settings
from store.pages import Changes
from store.query import Query
from store.workspace import Workspace, open_workspace
from tui.desk import Desk
from tui.dialogs import notice
from tui.triage import TRIAGE

log = logging.getLogger(__name__)
# SQLite page cache per connection for the TUI: pages of 200 rows need little, and the
# UI's workers each hold a connection (the poller's writes do fine with it too).
TUI_CACHE_MB = 16
LIVE_INTERVAL = 1.0  # seconds between looks at the change feed (target: visible within 2 s)
# With LISTEN/NOTIFY (PostgreSQL) commits announce themselves; the periodic look is then
# only the fallback, every this many seconds.
LISTEN_FALLBACK = 5.0
GAP_PATIENCE = 60.0  # seconds a missing event id is watched for a late commit


class NoticeHandler(logging.Handler):
    """Poller warnings (a mailbox failing, reconnecting) as unobtrusive notices."""

    def __init__(self, app: DeskqApp) -> None:
        super().__init__(logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name.rsplit('.', 1)[-1]}: {record.getMessage()}"
        if threading.current_thread() is threading.main_thread():
            notice(self.app, text, "warning", timeout=6)
        else:
            self.app.call_from_thread(notice, self.app, text, "warning", 6)


class Nudge(Message):
    """Someone committed events (PostgreSQL NOTIFY): look at the change feed now."""


class DeskqApp(App[None]):
    """The queue, the ticket view and triage, live over a workspace."""

    CSS_PATH = "deskq.tcss"
    TITLE = "deskq"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+c", "quit", "Quit", show=False)]

    def __init__(
        self,
        ws: Workspace,
        *,
        poll: bool = False,
        live_interval: float = LIVE_INTERVAL,
        tune_gc: bool = False,
    ) -> None:
        super().__init__()
        self.ws = ws
        self.desk = Desk(ws)
        self.poll = poll
        self.live_interval = live_interval
        self.tune_gc = tune_gc
        self.stop_event = threading.Event()
        self.cursor: int | None = None
        self.gaps: dict[int, float] = {}
        self.outbox_failed: int | None = (
            None  # emails that failed for good  # event ids not visible yet -> when first missed
        )
        self._handler: NoticeHandler | None = None
        self.breach_checked = time.time()  # SLA misses after this are announced
        self.listener: Any = None  # store.notify.Listener on PostgreSQL
        self.last_look = 0.0

    def on_mount(self) -> None:
        from tui.queue_screen import QueueScreen

        # Taken before the first page is read, so no change in between can be missed.
        self.cursor = self.desk.cursor()
        self.push_screen(QueueScreen(self.desk, self.ws.settings))
        self._start_live()
        if self.tune_gc:
            self.call_after_refresh(_tune_gc)
        if self.poll and (self.ws.settings.mailbox or self.ws.settings.sending):
            self._handler = NoticeHandler(self)
            logging.getLogger("mail").addHandler(self._handler)
            if self.ws.settings.mailbox:
                self._run_poller()
            if self.ws.settings.sending is not None:
                self._run_sender()

    def on_unmount(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.stop_event.set()
        self.desk.wake_sender.set()
        if self._handler is not None:
            logging.getLogger("mail").removeHandler(self._handler)

    # ------------------------------------------------------------------ background work

    @work(thread=True, group="poller", exclusive=True, exit_on_error=False)
    def _run_poller(self) -> None:
        from mail.poller import run_forever

        run_forever(self.ws, self.stop_event, bulk=False)

    @work(thread=True, group="sender", exclusive=True, exit_on_error=False)
    def _run_sender(self) -> None:
        from mail import sender

        settings = self.ws.settings.sending
        assert settings is not None
        sender.run_sender(
            self.ws.db,
            lambda: sender.make_transport(settings),
            self.stop_event,
            wake=self.desk.wake_sender,
            after_sent=sender.sent_copier(self.ws.settings, self.ws.db),
        )

    def _start_live(self) -> None:
        self.set_interval(self.live_interval, self._tick, name="live")
        if self.ws.db.engine.dialect.name == "postgresql":
            from store.notify import Listener

            # post_message is thread-safe and never waits: a closing app cannot hang it.
            self.listener = Listener(self.ws.db.engine.url, lambda: self.post_message(Nudge()))
            self.listener.start()

    def _tick(self) -> None:
        listening = self.listener is not None and self.listener.listening.is_set()
        if not listening or time.monotonic() - self.last_look >= LISTEN_FALLBACK:
            self.check_changes()

    def on_nudge(self, _: Nudge) -> None:
        self.check_changes()

    def check_changes(self) -> None:
        """Look at the change feed (in a worker); screens update what changed."""
        self.last_look = time.monotonic()
        self._look_for_changes()

    @work(thread=True, group="live", exclusive=True, exit_on_error=False)
    def _look_for_changes(self) -> None:
        if self.cursor is None:
            return
        if self.outbox_failed is None:
            self.outbox_failed = self.desk.outbox_failed()
            self.call_from_thread(self._outbox_changed)
        now = time.monotonic()
        # A gap older than a minute was a rolled-back transaction, not a late commit.
        self.gaps = {g: t for g, t in self.gaps.items() if now - t < GAP_PATIENCE}
        changes = self.desk.changes(self.cursor, self.gaps)
        self.gaps = {g: self.gaps.get(g, now) for g in changes.gaps}
        self._look_for_breaches()
        if changes.cursor == self.cursor and not changes.touched:
            return
        self.cursor = changes.cursor
        failed = self.desk.outbox_failed()
        if failed != self.outbox_failed:
            self.outbox_failed = failed
            self.call_from_thread(self._outbox_changed)
        fresh = self.desk.rows(Query(), changes.created) if changes.created else {}
        self.call_from_thread(self._changed, changes, [r for r in fresh.values() if r])

    def _look_for_breaches(self) -> None:
        """Announce my tickets that just missed an SLA target, and redraw their rows."""
        until = time.time()
        breached = self.desk.breached_since(self.breach_checked, until)
        self.breach_checked = until
        if breached and self.cursor is not None:
            self.call_from_thread(self._breached, breached)

    def _breached(self, breached: list[tuple[int, str]]) -> None:
        for tid, subject in breached[:3]:
            notice(self, f"SLA breached: #{tid} {subject}", "warning", timeout=10)
        if len(breached) > 3:
            notice(self, f"and {len(breached) - 3} more of your tickets breached", "warning")
        ids = frozenset(tid for tid, _ in breached)
        self._changed(Changes(self.cursor or 0, ids, frozenset()), [])

    def _outbox_changed(self) -> None:
        for screen in self.screen_stack:
            update = getattr(screen, "outbox_changed", None)
            if update is not None:
                update(self.outbox_failed or 0)

    def _changed(self, changes: Changes, created: list) -> None:  # type: ignore[type-arg]
        for screen in self.screen_stack:
            handle = getattr(screen, "handle_changes", None)
            if handle is not None:
                handle(changes)
        # Tickets I created myself (a split) are already read: no notice for those.
        new = [r for r in created if r.unread or self.desk.me_id is None]
        for row in new[:3]:
            t = row.ticket
            notice(self.app, f"new #{t.id} [{t.queue}] {t.subject}", timeout=5)
        if len(new) > 3:
            notice(self.app, f"and {len(new) - 3} more new tickets", timeout=5)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A failed background job becomes a visible notice, never a crash."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            log.warning("background job %s failed", event.worker.name, exc_info=error)
            notice(
                self,
                f"{event.worker.group or 'background job'} failed: {error}",
                "error",
                timeout=10,
            )

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:  # type: ignore[type-arg]
        yield from super().get_system_commands(screen)
        triage = getattr(screen, "action_triage", None)
        if triage is not None:
            for a in TRIAGE:
                yield SystemCommand(
                    f"{a.title.rstrip('…')} ({a.key})", a.help, lambda name=a.name: triage(name)
                )
        for name, title, help in PALETTE:
            action = getattr(screen, f"action_{name}", None)
            if action is not None:
                yield SystemCommand(title, help, action)
        lists = screen.query("TicketList")
        if lists:
            tickets = lists.first()
            for name, title, help in LIST_PALETTE:
                yield SystemCommand(title, help, getattr(tickets, f"action_{name}"))


PALETTE = (
    ("filter", "Filter (/)", "filter the queue: status:open prio:high assignee:me vpn"),
    ("sort", "Sort by… (o)", "sort the queue on a column"),
    ("save_view", "Save view (S)", "save the current filter as a named view"),
    ("delete_view", "Delete view (D)", "delete the saved view shown"),
    ("reload", "Reload (ctrl+l)", "read the queue again"),
    ("reply", "Reply (r)", "answer with a template, edit, send"),
    ("outbox", "Outbox (O)", "queued and failed mail; retry"),
    ("reports", "Reports (T)", "volume, backlog, response times, SLA attainment, ratings"),
    ("unread", "Mark unread (U)", "show the ticket as unseen"),
    ("attachments", "Attachments (A)", "save or open an attachment"),
    ("links", "Linked tickets (L)", "go to a linked ticket"),
    ("help", "Keys (?)", "every key of this screen"),
)


LIST_PALETTE = (
    ("open", "Open ticket (enter)", "the conversation of the ticket under the cursor"),
    ("toggle_mark", "Mark / unmark (v)", "actions apply to every marked ticket"),
    ("clear_marks", "Unmark all (V)", "clear every mark"),
    ("first", "First ticket (g)", "jump to the top of the queue"),
    ("last", "Last ticket (G)", "jump to the end of the queue"),
)


def _tune_gc() -> None:
    """Keep Python's cyclic GC from pausing the UI for 80-100 ms every few seconds.

    A full collection walks every object, and a Textual app holds many long-lived
    ones: they are frozen (never scanned again) once the first screen is up, and
    young collections run less often. Measured: the p95 of opening a ticket went
    from 120-170 ms to under 45 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def open_for_tui(settings: Settings, progress: Any = None, report: Any = None) -> Workspace:
    """The workspace as the TUI opens it (a smaller page cache than bulk ingestion)."""
    return open_workspace(settings, cache_mb=TUI_CACHE_MB, progress=progress, report=report)


def make_app(
    ws: Workspace,
    *,
    poll: bool = False,
    live_interval: float = LIVE_INTERVAL,
    tune_gc: bool = False,
) -> DeskqApp:
    """The one way the CLI and the tests build the app (``tune_gc``: see :func:`_tune_gc`;
    the CLI turns it on, tests leave the process's GC alone)."""
    return DeskqApp(ws, poll=poll, live_interval=live_interval, tune_gc=tune_gc)
