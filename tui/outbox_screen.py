"""The outbox: queued, sending and failed mail, with retry; failures never go unseen."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from store.services import ActionError
from tui.desk import Desk
from tui.dialogs import notice
from tui.safe_text import for_terminal

STATE_STYLE = {"failed": "bold red", "queued": "yellow", "sending": "cyan", "sent": "dim"}


class OutboxScreen(Screen[None]):
    """Every outgoing email not yet sent (``a`` also shows the last sent ones)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,escape", "back", "Back"),
        Binding("r", "retry", "Retry now"),
        Binding("a", "toggle_sent", "Sent too"),
        Binding("ctrl+l", "reload", "Reload", show=False),
    ]

    def __init__(self, desk: Desk) -> None:
        super().__init__()
        self.desk = desk
        self.with_sent = False
        self.items: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Static(id="outbox-title")
        yield DataTable(id="outbox", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("#", "Ticket", "State", "Kind", "Tries", "To", "Last error")
        self.action_reload()

    @work(thread=True, group="outbox", exclusive=True, exit_on_error=False)
    def action_reload(self) -> None:
        items = self.desk.outbox(self.with_sent)
        self.app.call_from_thread(self._show, items)

    def _show(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for i in items:
            cells = [str(i["id"]), f"#{i['ticket']}" if i["ticket"] else "-", i["state"], i["kind"],
                     str(i["attempts"]), i["to"], i["last_error"]]  # fmt: skip
            texts = [Text(for_terminal(c, keep_newlines=False)) for c in cells]
            texts[2].stylize(STATE_STYLE.get(i["state"], ""))
            table.add_row(*texts, key=str(i["id"]))
        if items:
            table.move_cursor(row=min(row, len(items) - 1))
        failed = sum(1 for i in items if i["state"] == "failed")
        waiting = sum(1 for i in items if i["state"] in ("queued", "sending"))
        self.query_one("#outbox-title", Static).update(
            Text(
                f"Outbox: {waiting} waiting, {failed} failed"
                + (" (and the last sent)" if self.with_sent else "")
            )
        )

    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_sent(self) -> None:
        self.with_sent = not self.with_sent
        self.action_reload()

    @work(group="outbox-retry", exclusive=True, exit_on_error=False)
    async def action_retry(self) -> None:
        table = self.query_one(DataTable)
        if not self.items:
            return
        item = self.items[table.cursor_row]
        try:
            await asyncio.to_thread(self.desk.retry_outbox, item["id"])
        except ActionError as exc:  # e.g. sent meanwhile: shown, the list stays
            notice(self.app, str(exc), "error")
            return
        notice(self.app, f"outbox {item['id']}: queued again")
        self.action_reload()
