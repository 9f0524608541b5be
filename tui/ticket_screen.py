"""One ticket: the conversation, why each message is here, attachments, history, links."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import WorkerCancelled, WorkerFailed

from mail.quotes import split_quotes
from store.pages import Changes
from store.views import MessageView, TicketDetail
from tui import attachments
from tui.desk import Desk, Target
from tui.dialogs import ChoiceDialog, HelpScreen, describe_change, notice
from tui.safe_text import for_terminal
from tui.ticket_list import TicketList, age, person_label
from tui.triage import TRIAGE, run_action, triage_bindings

LABEL = {"inbound": "received", "outbound": "sent", "note": "internal note"}
TICKET_KEYS = (
    ("j k ↓ ↑", "scroll (space, pagedown, pageup: a page)"),
    ("J K", "next / previous ticket of the queue"),
    ("z", "show / fold quoted history"),
    ("h", "show / hide full headers"),
    ("e", "show / hide the event history"),
    ("A", "attachments: save or open"),
    ("L", "go to a linked ticket"),
    ("r", "reply (template, edit, send)"),
    ("U", "mark unread and go back"),
    ("q escape", "back to the queue"),
)


def plain_line(text: str) -> Text:
    """Untrusted text for a one-line title: sanitised, never parsed as markup."""
    return Text(for_terminal(text, keep_newlines=False))


def render_message(m: MessageView, *, unfold: bool, headers: str | None) -> Text:
    """A message as plain text: quoted history folded unless ``unfold``."""
    text = Text()
    if headers is not None:
        text.append(for_terminal(headers.strip()) + "\n\n", style="dim")
    for block in split_quotes(m.text.strip("\n")):
        body = for_terminal("\n".join(block.lines))
        if block.quoted and not unfold:
            text.append(f"··· {len(block.lines)} quoted lines (z shows them)\n", style="dim italic")
        elif block.quoted:
            text.append(body + "\n", style="dim")
        else:
            text.append(body + "\n")
    for a in m.attachments:
        text.append(
            f"\n📎 {for_terminal(a.filename)}  {a.media_type}  {a.size:,} bytes", style="bold"
        )
    return text


class TicketScreen(Screen[dict[int, int]]):
    """The conversation of one ticket, with every triage action."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,escape", "back", "Back"),
        Binding("question_mark", "help", "Help"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
        Binding("space,pagedown", "scroll_page(1)", "Page down", show=False),
        Binding("pageup", "scroll_page(-1)", "Page up", show=False),
        Binding("J", "next(1)", "Next ticket", show=False),
        Binding("K", "next(-1)", "Previous ticket", show=False),
        Binding("z", "toggle('unfold')", "Quotes"),
        Binding("h", "toggle('headers')", "Headers", show=False),
        Binding("e", "toggle('history')", "History", show=False),
        Binding("A", "attachments", "Attachments", show=False),
        Binding("L", "links", "Links", show=False),
        Binding("U", "unread", "Unread", show=False),
        Binding("r", "reply", "Reply"),
        *triage_bindings(shown="cn"),
    ]

    def __init__(self, desk: Desk, ticket_id: int, queue: TicketList | None = None) -> None:
        super().__init__()
        self.desk, self.ticket_id, self.queue = desk, ticket_id, queue
        self.detail: TicketDetail | None = None
        self.unfold = False
        self.headers: dict[int, str] | None = None
        self.history = True
        # ticket -> version shown; returned on dismiss (read marks, rows to refresh)
        self.visited: dict[int, int] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="ticket-header")
        yield VerticalScroll(id="conversation")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        """(Re)read the ticket on screen (its read mark follows once it is shown)."""
        self._load(self.ticket_id)

    @work(thread=True, group="ticket", exclusive=True, exit_on_error=False)
    def _load(self, ticket_id: int) -> None:
        detail = self.desk.detail(ticket_id, mark_read=False)
        headers = None
        if detail is not None and self.headers is not None:
            headers = {m.id: self.desk.raw_headers(m.id) for m in detail.messages}
        self.app.call_from_thread(self._show, detail, headers, ticket_id)

    def _show(
        self,
        detail: TicketDetail | None,
        headers: dict[int, str] | None,
        ticket_id: int | None = None,
    ) -> None:
        if ticket_id is not None and ticket_id != self.ticket_id:
            return  # a slower read of a ticket J/K already moved past
        if detail is None:
            notice(self.app, f"ticket #{self.ticket_id} no longer exists", "error")
            self.dismiss(self.visited)
            return
        self.detail, self.headers = detail, headers if self.headers is not None else None
        self.visited[detail.ticket.id] = detail.ticket.version
        self._mark_read(detail.ticket.id, detail.ticket.version)
        self.query_one("#ticket-header", Static).update(self._header_text(detail))
        box = self.query_one("#conversation", VerticalScroll)
        y = box.scroll_y
        box.remove_children()
        box.mount_all(self._conversation(detail))
        box.call_after_refresh(box.scroll_to, y=y, animate=False)

    @work(thread=True, group="mark-read", exit_on_error=False)
    def _mark_read(self, ticket_id: int, version: int) -> None:
        # After the conversation is on screen: a write must not delay the first paint.
        self.desk.mark_read(ticket_id, version)

    def _header_text(self, d: TicketDetail) -> Text:
        t = d.ticket
        text = Text(no_wrap=False)
        text.append(f"#{t.id} ", style="bold")
        text.append(f"[{for_terminal(t.queue)}] ", style="bold")
        text.append(for_terminal(t.subject or "(no subject)", keep_newlines=False), style="bold")
        assignee = person_label(t.assignee.name, t.assignee.address) if t.assignee else "nobody"
        meta = [
            t.status,
            f"prio {t.priority}",
            f"from {person_label(t.requester.name, t.requester.address)} <{t.requester.address}>",
            f"assigned to {assignee}",
            f"opened {age(t.created_at, datetime.now(UTC))} ago",
        ]
        if t.category:
            meta.append(f"category {t.category}")
        if t.tags:
            meta.append("tags " + " ".join(t.tags))
        meta += [f"⚠ {flag}: {detail}" for flag, detail in sorted(d.flag_details.items())]
        if d.links:
            meta.append("links " + " ".join(f"#{o} ({k})" for o, k in d.links))
        if t.merged_into:
            meta.append(f"merged into #{t.merged_into}")
        ratings = [e.data.get("rating") for e in d.events if e.kind == "rating"]
        if ratings:
            meta.append(f"rated {ratings[-1]}/5 by the requester")
        text.append("\n" + for_terminal(" · ".join(meta), keep_newlines=False), style="dim")
        return text

    def _conversation(self, d: TicketDetail) -> list[Static]:
        widgets = []
        for m in d.messages:
            body = render_message(
                m,
                unfold=self.unfold,
                headers=(self.headers or {}).get(m.id) if self.headers is not None else None,
            )
            w = Static(body, classes=f"message {m.direction}")
            when = f"{m.date:%a %d %b %Y %H:%M}" if m.date else "no date"
            # Text, not str: a str title would be parsed as markup.
            w.border_title = plain_line(
                f"{LABEL.get(m.direction, m.direction)} · {m.from_addr} · {when}"
            )
            if m.direction == "inbound":
                w.border_subtitle = plain_line(f"threaded: {m.threaded_by}")
            widgets.append(w)
        if self.history:
            lines = Text()
            for e in d.events:
                lines.append(f"{e.at:%Y-%m-%d %H:%M} v{e.version} ", style="dim")
                lines.append(
                    for_terminal(describe_change(e.kind, e.actor, e.data), keep_newlines=False)
                    + "\n"
                )
            history = Static(lines, classes="history")
            history.border_title = "history (e hides)"
            widgets.append(history)
        return widgets

    # ------------------------------------------------------------------ keys

    def action_back(self) -> None:
        self.dismiss(self.visited)

    def action_scroll(self, delta: int) -> None:
        self.query_one("#conversation", VerticalScroll).scroll_relative(y=delta, animate=False)

    def action_scroll_page(self, direction: int) -> None:
        box = self.query_one("#conversation", VerticalScroll)
        box.scroll_relative(y=direction * max(box.size.height - 2, 1), animate=False)

    def action_toggle(self, what: str) -> None:
        if what == "unfold":
            self.unfold = not self.unfold
        elif what == "history":
            self.history = not self.history
        else:
            self.headers = None if self.headers is not None else {}
            self.load()
            return
        if self.detail is not None:
            self._show(self.detail, self.headers)

    def action_next(self, delta: int) -> None:
        if self.queue is None:
            return
        self.queue._move_by(delta)
        current = self.queue.current
        if current is not None and current.id != self.ticket_id:
            self.ticket_id = current.id
            self.query_one("#conversation", VerticalScroll).scroll_home(animate=False)
            self.load()

    def action_help(self) -> None:
        triage = [(a.key, f"{a.title} {a.help}") for a in TRIAGE]
        self.app.push_screen(HelpScreen([("Ticket", TICKET_KEYS), ("Triage", triage)]))

    @work(group="reply", exclusive=True, exit_on_error=False)
    async def action_reply(self) -> None:
        from tui.compose_screen import start_reply

        if await start_reply(self, self.desk, self.ticket_id):
            self.load()

    @work(group="unread", exit_on_error=False)
    async def action_unread(self) -> None:
        self.visited.pop(self.ticket_id, None)
        for worker in [w for w in self.workers if w.group == "mark-read"]:
            with contextlib.suppress(WorkerCancelled, WorkerFailed):
                await worker.wait()  # the read mark first, then its removal
        await asyncio.to_thread(self.desk.mark_unread, self.ticket_id)
        self.dismiss(self.visited)

    @work(group="triage", exclusive=True, exit_on_error=False)
    async def action_triage(self, action: str) -> None:
        if self.detail is None:
            return
        target = Target(self.detail.ticket.id, self.detail.ticket.version)
        outcome = await run_action(self, self.desk, action, [target])
        if outcome and (outcome.done or outcome.created):
            self.load()

    @work(group="links", exclusive=True, exit_on_error=False)
    async def action_links(self) -> None:
        if self.detail is None or not (self.detail.links or self.detail.ticket.merged_into):
            notice(self.app, "this ticket has no linked tickets", "warning")
            return
        links = list(self.detail.links)
        choices = [(str(o), f"#{o} ({k})") for o, k in links]
        picked = await self.app.push_screen_wait(ChoiceDialog("Go to ticket", choices))
        if picked is not None:
            self.ticket_id = int(picked)
            self.load()

    @work(group="attachments", exclusive=True, exit_on_error=False)
    async def action_attachments(self) -> None:
        if self.detail is not None:
            await attachments.choose(self, self.desk, self.detail)

    # ------------------------------------------------------------------ live

    def handle_changes(self, changes: Changes) -> None:
        """Re-read the ticket when someone else changed it."""
        if self.ticket_id in changes.touched:
            self.load()
