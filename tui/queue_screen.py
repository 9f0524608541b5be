"""The queue screen: views, the filter bar, the ticket table and triage on it."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from store.pages import Changes
from store.query import FILTER_KEYS, QueryError, parse_query
from store.services import ActionError
from tui.desk import Desk
from tui.dialogs import ChoiceDialog, HelpScreen, TextDialog, notice
from tui.ticket_list import COLUMNS, SORTABLE, TicketList
from tui.triage import TRIAGE, run_action, triage_bindings

if TYPE_CHECKING:
    from store.config import Settings


@dataclass(frozen=True)
class View:
    """A named query in the view bar."""

    name: str
    text: str
    saved: bool = False


LEFT_REFRESH = 30.0  # seconds between redraws of the SLA time left


def builtin_views(settings: Settings, queues: list[str] | None = None) -> list[View]:
    """All, mine, unassigned, breaching (with SLAs), one per queue, waiting, resolved.

    ``queues``: the keys of the queues the provider may see (default: all).
    """
    views = [
        View("All", ""),
        View("Mine", "assignee:me is:active"),
        View("Unassigned", "is:unassigned is:active"),
    ]
    if settings.sla:
        views.append(View("Breaching", "is:breaching sort:left"))
    views += [
        View(q.name if len(q.name) <= 12 else q.key, f"queue:{q.key} is:active")
        for q in settings.queue
        if queues is None or q.key in queues
    ]
    views += [View("Waiting", "is:waiting"), View("Resolved", "is:done")]
    return views


NAV_KEYS = (
    ("j k ↓ ↑", "next / previous ticket"),
    ("space ctrl+f", "page down (pageup, ctrl+b: up)"),
    ("ctrl+d ctrl+u", "half a page down / up"),
    ("g G", "first / last ticket"),
    ("enter", "open the ticket"),
    ("v  V", "mark / unmark the ticket (actions apply to all marked); V unmarks all"),
)
QUEUE_KEYS = (
    ("/", "filter: " + ", ".join(k + ":" for k in FILTER_KEYS) + " and free words"),
    ("[ ]  1-9", "previous / next view; jump to a view"),
    ("o", "sort by a column (or click its title)"),
    ("S  D", "save the filter as a view; delete the saved view"),
    ("r", "reply (template, edit, send)"),
    ("U", "mark the ticket unread"),
    ("O", "the outbox: queued and failed mail, retry"),
    ("T", "reports: volume, backlog, response times, SLA attainment, ratings"),
    ("ctrl+l", "reload"),
    ("? q", "this help; quit"),
)


class QueueScreen(Screen[None]):
    """The provider's main screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "app.quit", "Quit"),
        Binding("right_square_bracket", "view(1)", "Next view", show=False),
        Binding("left_square_bracket", "view(-1)", "Prev view", show=False),
        *[Binding(str(n), f"view_number({n})", show=False) for n in range(1, 10)],
        Binding("o", "sort", "Sort", show=False),
        Binding("S", "save_view", "Save view", show=False),
        Binding("D", "delete_view", "Delete view", show=False),
        Binding("U", "unread", "Unread", show=False),
        Binding("r", "reply", "Reply"),
        Binding("O", "outbox", "Outbox", show=False),
        Binding("T", "reports", "Reports", show=False),
        Binding("ctrl+l", "reload", "Reload", show=False),
        *triage_bindings(shown="cas"),
    ]

    def __init__(self, desk: Desk, settings: Settings) -> None:
        super().__init__()
        self.desk, self.settings = desk, settings
        self.views = builtin_views(settings, desk.queue_keys())
        self.view_index = 0
        self.query_text = ""
        self.failed_mail = 0

    def compose(self) -> ComposeResult:
        yield Static(id="view-bar")
        yield TicketList(self.desk, id="tickets")
        yield Input(placeholder="filter, e.g. status:open prio:high assignee:me vpn", id="filter")
        yield Static(id="status-line")
        yield Footer(compact=True)

    @property
    def tickets(self) -> TicketList:
        return self.query_one(TicketList)

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self._load_saved_views()
        self.show_view(0)
        if self.settings.sla:  # time left shrinks without any event: redraw it now and then
            self.set_interval(LEFT_REFRESH, self._refresh_left, name="sla-left")

    def _refresh_left(self) -> None:
        lst = self.tickets
        shown = {r.ticket.id for r in lst.rows[lst.top : lst.top + lst.body_height]}
        if shown:
            self.run_worker(self.refresh_tickets(shown), group="sla-left", exclusive=True)

    @work(thread=True, group="views", exit_on_error=False)
    def _load_saved_views(self, select: str | None = None) -> None:
        saved = self.desk.views()
        self.app.call_from_thread(self._set_saved, saved, select)

    def _set_saved(self, saved: list[tuple[str, str]], select: str | None = None) -> None:
        current = self.views[self.view_index] if 0 <= self.view_index < len(self.views) else None
        builtin = builtin_views(self.settings, self.desk.queue_keys())
        self.views = builtin + [View(n, t, True) for n, t in saved]
        if select is not None:  # a view just saved: it is the one shown
            current = next((v for v in self.views if v.saved and v.name == select), current)
        if current is not None and current in self.views:
            self.view_index = self.views.index(current)
        elif current is not None:  # the view shown was deleted
            self.view_index = -1
        self._draw_view_bar()

    # ------------------------------------------------------------------ views and filter

    def show_view(self, index: int) -> None:
        """Switch to the view at ``index``."""
        self.view_index = index % len(self.views)
        self.apply_filter(self.views[self.view_index].text, from_view=True)

    def apply_filter(self, text: str, *, from_view: bool = False, keep: int | None = None) -> bool:
        """Show the tickets ``text`` selects; False (with a notice) when it does not parse."""
        try:
            query = parse_query(text)
            if query.uses_me and self.desk.me_id is None:
                raise QueryError('this view needs me = "your address" in the config')
        except QueryError as exc:
            notice(self.app, str(exc), "error", timeout=8)
            return False
        if not from_view:
            self.view_index = next(
                (i for i, v in enumerate(self.views) if v.text.strip() == text.strip()), -1
            )
        self.query_text = text
        self.tickets.load(query, keep)
        self._draw_view_bar()
        return True

    def _draw_view_bar(self) -> None:
        labels = []
        for i, view in enumerate(self.views):
            style = "reverse bold" if i == self.view_index else ("italic" if view.saved else "")
            labels.append((f" {i + 1}:{view.name} " if i < 9 else f" {view.name} ", style))
        if self.view_index < 0:
            labels.append((" filter ", "reverse bold"))
        current = self.view_index if self.view_index >= 0 else len(labels) - 1
        width = self.size.width or self.app.size.width
        # Drop views from the left until the current one fits, then cut on the right:
        # an ellipsis says where views are hidden.
        first = 0
        while first < current and sum(len(t) for t, _ in labels[first : current + 1]) + 1 > width:
            first += 1
        bar = Text(no_wrap=True)
        if first:
            bar.append("…")
        for text, style in labels[first:]:
            bar.append(text, style=style)
        if bar.cell_len > width:
            bar.truncate(max(width - 1, 0))
            bar.append("…")
        self.query_one("#view-bar", Static).update(bar)

    def on_resize(self) -> None:
        self._draw_view_bar()

    def action_view(self, delta: int) -> None:
        self.show_view(max(self.view_index, 0) + delta)

    def action_view_number(self, number: int) -> None:
        if number <= len(self.views):
            self.show_view(number - 1)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.query_text
        box.display = True
        box.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self.apply_filter(event.value):
            self._close_filter()

    def _close_filter(self) -> None:
        self.query_one("#filter").display = False
        self.tickets.focus()

    def key_escape(self) -> None:
        if self.query_one("#filter").display:
            self._close_filter()
        elif self.tickets.marked:
            self.tickets.action_clear_marks()

    @work(group="sort", exclusive=True, exit_on_error=False)
    async def action_sort(self) -> None:
        query = self.tickets.query
        choices = [
            (c.key, c.title if c.key != "created" else "Age (created)")
            for c in COLUMNS
            if c.key in SORTABLE
        ]
        key = await self.app.push_screen_wait(ChoiceDialog("Sort by", choices, current=query.sort))
        if key is not None:
            self.sort_by(key)

    @on(TicketList.SortRequested)
    def _sort_clicked(self, event: TicketList.SortRequested) -> None:
        self.sort_by(event.key)

    def sort_by(self, key: str) -> None:
        """Sort on ``key``; sorting on the current column again reverses it."""
        query = self.tickets.query
        words = [re.sub(r"(?i)(^|\s)sort:\S*", " ", self.query_text).strip()]
        same = query.sort == key
        natural = parse_query(f"sort:{key}").descending
        descending = (not query.descending) if same else natural
        prefix = "" if descending == natural else "-"
        keep = self.tickets.current.id if self.tickets.current else None
        self.apply_filter(" ".join([w for w in words if w] + [f"sort:{prefix}{key}"]), keep=keep)

    @work(group="save-view", exclusive=True, exit_on_error=False)
    async def action_save_view(self) -> None:
        name = await self.app.push_screen_wait(
            TextDialog(f"Save '{self.query_text}' as view", placeholder="name, e.g. vpn-open")
        )
        if not name:
            return
        try:
            await asyncio.to_thread(self.desk.save_view, name, self.query_text)
        except (ValueError, ActionError) as exc:  # a bad name, or no me: shown, not raised
            notice(self.app, str(exc), "error")
            return
        notice(self.app, f"view {name} saved")
        self._load_saved_views(name.strip())

    @work(group="save-view", exclusive=True, exit_on_error=False)
    async def action_delete_view(self) -> None:
        view = self.views[self.view_index] if self.view_index >= 0 else None
        if view is None or not view.saved:
            notice(self.app, "only a saved view can be deleted: switch to it first", "warning")
            return
        await asyncio.to_thread(self.desk.delete_view, view.name)
        notice(self.app, f"view {view.name} deleted")
        self.views.remove(view)
        self.show_view(0)
        self._load_saved_views()

    def action_reload(self) -> None:
        keep = self.tickets.current.id if self.tickets.current else None
        self.apply_filter(self.query_text, keep=keep)

    def action_help(self) -> None:
        triage = [(a.key, f"{a.title} {a.help}") for a in TRIAGE]
        self.app.push_screen(
            HelpScreen(
                [
                    ("Moving", NAV_KEYS),
                    ("Triage (marked tickets, or the current one)", triage),
                    ("Queue", QUEUE_KEYS),
                ]
            )
        )

    # ------------------------------------------------------------------ acting

    @work(group="triage", exclusive=True, exit_on_error=False)
    async def action_triage(self, action: str) -> None:
        outcome = await run_action(self, self.desk, action, self.tickets.targets())
        if outcome and (outcome.done or outcome.created):
            self.tickets.marked.clear()
            await self.refresh_tickets(set(outcome.done) | set(outcome.created))

    @work(group="reply", exclusive=True, exit_on_error=False)
    async def action_reply(self) -> None:
        from tui.compose_screen import start_reply

        current = self.tickets.current
        if current is None:
            notice(self.app, "no ticket selected", "warning")
            return
        if await start_reply(self, self.desk, current.id):
            await self.refresh_tickets({current.id})

    def action_outbox(self) -> None:
        from tui.outbox_screen import OutboxScreen

        self.app.push_screen(OutboxScreen(self.desk))

    def action_reports(self) -> None:
        from tui.reports_screen import ReportsScreen

        self.app.push_screen(ReportsScreen(self.desk, self.desk.queue_keys()))

    @work(group="unread", exit_on_error=False)
    async def action_unread(self) -> None:
        targets = self.tickets.targets()
        for t in targets:
            await asyncio.to_thread(self.desk.mark_unread, t.id)
        await self.refresh_tickets({t.id for t in targets})

    async def refresh_tickets(self, ids: set[int]) -> None:
        """Re-read these tickets' rows (after an action or a change elsewhere)."""
        window = {r.ticket.id for r in self.tickets.rows}
        fresh = await asyncio.to_thread(self.desk.rows, self.tickets.query, ids & window)
        self.tickets.apply_changes(fresh)

    @on(TicketList.Opened)
    def _open(self, event: TicketList.Opened) -> None:
        from tui.ticket_screen import TicketScreen

        self.app.push_screen(TicketScreen(self.desk, event.ticket.id, self.tickets), self._returned)

    @work(group="returned", exit_on_error=False)
    async def _returned(self, visited: dict[int, int] | None) -> None:
        # Read marks (and anything done there) show on the rows at once.
        if visited:
            for ticket_id, version in visited.items():
                await asyncio.to_thread(self.desk.mark_read, ticket_id, version)
            await self.refresh_tickets(set(visited))

    # ------------------------------------------------------------------ live

    @work(group="live-queue", exclusive=True, exit_on_error=False)
    async def handle_changes(self, changes: Changes) -> None:
        """Bring changed tickets up to date; new ones appear when the top is in view."""
        lst = self.tickets
        window = {r.ticket.id for r in lst.rows}
        outside = changes.touched - window
        if changes.truncated or (outside and lst.at_start and lst.cursor < lst.body_height):
            keep = lst.current.id if lst.current else None
            lst.generation += 1
            rows = await asyncio.to_thread(self.desk.first_page, lst.query, 200)
            lst._replace(lst.generation, rows, True, keep)
            lst._fetch_count(lst.generation, lst.query)
            return
        if changes.touched & window:
            await self.refresh_tickets(set(changes.touched))
        if changes.created:
            lst._fetch_count(lst.generation, lst.query)

    def outbox_changed(self, failed: int) -> None:
        """The app's count of emails that failed for good: shown until dealt with."""
        self.failed_mail = failed
        self._update_status()

    @on(TicketList.Moved)
    def _update_status(self) -> None:
        lst = self.tickets
        parts = []
        if self.failed_mail:
            parts.append(f"⚠ {self.failed_mail} email(s) not sent: O opens the outbox")
        if lst.total is not None:
            pos = lst.position
            where = (
                f"{pos + 1:,}/{lst.total:,}" if pos is not None and lst.rows else f"{lst.total:,}"
            )
            parts.append(f"{where} tickets")
        if lst.marked:
            parts.append(f"{len(lst.marked)} marked")
        if self.query_text:
            parts.append(self.query_text)
        self.query_one("#status-line", Static).update(
            Text(" · ".join(parts), no_wrap=True, overflow="ellipsis")
        )
