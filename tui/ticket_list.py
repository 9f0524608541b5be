"""The queue table: a window of rows over a query, loaded page by page (keyset).

Only a window of at most :data:`WINDOW` rows is ever in memory, fetched in pages of
:data:`PAGE` before the cursor gets to them, so scrolling a million tickets costs what
scrolling ten does. Every cell is built as plain segments from sanitised text: nothing
from email is ever parsed as markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from store.pages import QueueRow
from store.query import Query
from store.views import TicketSummary
from tui.desk import Desk, Target
from tui.safe_text import for_terminal

PAGE = 200
WINDOW = 2000

STATUS_SHORT = {
    "new": "new",
    "open": "open",
    "pending": "pend",
    "on-hold": "hold",
    "resolved": "done",
    "closed": "closed",
}
PRIO_SHORT = {"low": "low", "normal": "norm", "high": "HIGH", "urgent": "URG!"}


@dataclass(frozen=True)
class Column:
    """One column: its title, sort key, width (0: shares the rest) and share of the rest."""

    key: str
    title: str
    width: int
    share: int = 0


COLUMNS = (
    Column("id", "#", 6),
    Column("queue", "Queue", 6),
    Column("created", "Age", 4),
    Column("prio", "Prio", 4),
    Column("status", "Status", 6),
    Column("requester", "Requester", 0, 2),
    Column("subject", "Subject", 0, 5),
    Column("assignee", "Assignee", 10),
    Column("left", "Left", 5),
)
SORTABLE = {"id", "queue", "created", "prio", "status", "requester", "subject", "assignee", "left"}


def fit(text: str, width: int) -> str:
    """Sanitised one-line text padded or cut (with …) to exactly ``width`` cells."""
    text = for_terminal(text, keep_newlines=False).strip()
    if width <= 0:
        return ""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def age(then: datetime, now: datetime) -> str:
    """A compact age: 5m, 3h, 2d, 6w, 1y."""
    seconds = max((now - then).total_seconds(), 0)
    for unit, size in (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600)):
        if seconds >= size * (2 if unit in "yw" else 1):
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds // 60)}m"


def person_label(name: str, address: str) -> str:
    """The display name, or the address's local part."""
    return name or address.split("@", 1)[0]


class TicketList(Widget, can_focus=True):
    """The queue's rows, with a cursor, marks and live updates."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "move(1)", "Down", show=False),
        Binding("k,up", "move(-1)", "Up", show=False),
        Binding("ctrl+d", "half_page(1)", "Half page down", show=False),
        Binding("ctrl+u", "half_page(-1)", "Half page up", show=False),
        Binding("pagedown,ctrl+f,space", "page(1)", "Page down", show=False),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False),
        Binding("g,home", "first", "First", show=False),
        Binding("G,end", "last", "Last", show=False),
        Binding("v", "toggle_mark", "Mark", show=False),
        Binding("V", "clear_marks", "Unmark all", show=False),
        Binding("enter", "open", "Open", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "ticket-list--header",
        "ticket-list--cursor",
        "ticket-list--marked",
        "ticket-list--unread",
        "ticket-list--done",
        "ticket-list--high",
        "ticket-list--urgent",
    }

    class Opened(Message):
        """Enter on a row."""

        def __init__(self, ticket: TicketSummary) -> None:
            self.ticket = ticket
            super().__init__()

    class Moved(Message):
        """The cursor, the window or the count changed (for the status line)."""

        ALLOW_SELECTOR_MATCH: ClassVar[set[str]] = set()

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, TicketList.Moved)

    class SortRequested(Message):
        """A click on a column title."""

        def __init__(self, key: str) -> None:
            self.key = key
            super().__init__()

    def __init__(self, desk: Desk, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.desk = desk
        self.query = Query()
        self.rows: list[QueueRow] = []
        self.cursor = 0
        self.top = 0
        self.at_start = True
        self.at_end = True
        self.first_pos: int | None = 0
        self.total: int | None = None
        self.marked: dict[int, int] = {}
        self.generation = 0
        self.fetching_first = False
        self.loaded = False
        self._fetching = False
        self._pending_move = 0

    # ------------------------------------------------------------------ state

    @property
    def current(self) -> TicketSummary | None:
        """The ticket under the cursor."""
        return self.rows[self.cursor].ticket if self.rows else None

    @property
    def position(self) -> int | None:
        """The cursor's 0-based place in the whole result, when known."""
        return None if self.first_pos is None else self.first_pos + self.cursor

    def targets(self) -> list[Target]:
        """The marked tickets, or else the one under the cursor."""
        if self.marked:
            return [Target(tid, version) for tid, version in sorted(self.marked.items())]
        t = self.current
        return [Target(t.id, t.version)] if t else []

    @property
    def body_height(self) -> int:
        return max(self.size.height - 1, 1)

    # ------------------------------------------------------------------ loading

    def load(self, query: Query, keep: int | None = None) -> None:
        """Show ``query`` from its first row (the cursor stays on ``keep`` if it is there)."""
        self.query = query
        self.generation += 1
        self.fetching_first = True
        self.total = None
        # The count starts once the first page is in: both at once slow the page down.
        self._fetch_first(self.generation, query, keep)

    @work(thread=True, group="list-first", exclusive=True, exit_on_error=False)
    def _fetch_first(self, generation: int, query: Query, keep: int | None) -> None:
        rows = self.desk.first_page(query, PAGE)
        self.app.call_from_thread(self._replace, generation, rows, True, keep)

    @work(thread=True, group="list-count", exclusive=True, exit_on_error=False)
    def _fetch_count(self, generation: int, query: Query) -> None:
        total = self.desk.count(query)
        self.app.call_from_thread(self._set_total, generation, total)

    def _set_total(self, generation: int, total: int) -> None:
        if generation != self.generation:
            return
        self.total = total
        if self.at_end and self.first_pos is None:
            self.first_pos = total - len(self.rows)
        self.post_message(self.Moved())

    def _replace(
        self, generation: int, rows: list[QueueRow], from_start: bool, keep: int | None
    ) -> None:
        if generation != self.generation:
            return
        self.rows = rows
        self.at_start, self.at_end = (
            (True, len(rows) < PAGE) if from_start else (len(rows) < PAGE, True)
        )
        self.first_pos = (
            0 if from_start else (None if self.total is None else self.total - len(rows))
        )
        self.cursor = 0 if from_start else max(len(rows) - 1, 0)
        if keep is not None:
            for i, row in enumerate(rows):
                if row.ticket.id == keep:
                    self.cursor = i
                    break
        self.top = 0
        if from_start and self.total is None:
            self._fetch_count(generation, self.query)
        self.fetching_first, self.loaded = False, True
        self._fetching = False
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Moved())

    def _maybe_prefetch(self) -> None:
        if self._fetching or not self.rows:
            return
        margin = self.body_height * 2
        if not self.at_end and self.cursor >= len(self.rows) - margin:
            self._fetching = True
            self._fetch_more(self.generation, self.rows[-1].key, True)
        elif not self.at_start and self.cursor < margin:
            self._fetching = True
            self._fetch_more(self.generation, self.rows[0].key, False)

    @work(thread=True, group="list-more", exclusive=True, exit_on_error=False)
    def _fetch_more(self, generation: int, key: tuple, forward: bool) -> None:
        if forward:
            rows = self.desk.page_after(self.query, key, PAGE)
        else:
            rows = self.desk.page_before(self.query, key, PAGE)
        self.app.call_from_thread(self._extend, generation, rows, forward)

    def _extend(self, generation: int, rows: list[QueueRow], forward: bool) -> None:
        self._fetching = False
        if generation != self.generation:
            return
        if forward:
            self.rows.extend(rows)
            self.at_end = len(rows) < PAGE
            excess = len(self.rows) - WINDOW
            if excess > 0:
                del self.rows[:excess]
                self.cursor -= excess
                self.top = max(self.top - excess, 0)
                self.at_start = False
                self.first_pos = None if self.first_pos is None else self.first_pos + excess
        else:
            self.rows[:0] = rows
            self.cursor += len(rows)
            self.top += len(rows)
            self.at_start = len(rows) < PAGE
            if self.first_pos is not None:
                self.first_pos -= len(rows)
            elif self.at_start:
                self.first_pos = 0
            excess = len(self.rows) - WINDOW
            if excess > 0:
                del self.rows[-excess:]
                self.at_end = False
        pending, self._pending_move = self._pending_move, 0
        if pending:
            self._move_by(pending)
        else:
            self.refresh()
            self.post_message(self.Moved())
        self._maybe_prefetch()

    @work(thread=True, group="list-last", exclusive=True, exit_on_error=False)
    def _fetch_last(self, generation: int) -> None:
        rows = self.desk.last_page(self.query, PAGE)
        self.app.call_from_thread(self._replace, generation, rows, False, None)

    def apply_changes(self, fresh: dict[int, QueueRow | None]) -> None:
        """Replace rows with fresh copies; drop those that left the view."""
        keep = self.current.id if self.current else None
        rows = []
        for row in self.rows:
            if row.ticket.id in fresh:
                new = fresh[row.ticket.id]
                if new is not None:
                    rows.append(new)
                    if row.ticket.id in self.marked:
                        self.marked[row.ticket.id] = new.ticket.version
            else:
                rows.append(row)
        self.rows = rows
        self._place_cursor(keep)
        self.refresh()
        self.post_message(self.Moved())

    def _place_cursor(self, ticket_id: int | None) -> None:
        for i, row in enumerate(self.rows):
            if row.ticket.id == ticket_id:
                self.cursor = i
                break
        self.cursor = min(self.cursor, max(len(self.rows) - 1, 0))
        self._scroll_to_cursor()

    # ------------------------------------------------------------------ moving

    def _scroll_to_cursor(self) -> None:
        h = self.body_height
        if self.cursor < self.top:
            self.top = self.cursor
        elif self.cursor >= self.top + h:
            self.top = self.cursor - h + 1
        self.top = max(min(self.top, max(len(self.rows) - h, 0)), 0)

    def _move_by(self, delta: int) -> None:
        if not self.rows:
            return
        target = self.cursor + delta
        if target >= len(self.rows) and not self.at_end:
            self._pending_move = target - (len(self.rows) - 1)
        elif target < 0 and not self.at_start:
            self._pending_move = target
        self.cursor = max(0, min(target, len(self.rows) - 1))
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Moved())
        self._maybe_prefetch()

    def action_move(self, delta: int) -> None:
        self._move_by(delta)

    def action_page(self, direction: int) -> None:
        h = self.body_height
        self.top = max(self.top + direction * h, 0)
        self._move_by(direction * h)

    def action_half_page(self, direction: int) -> None:
        self._move_by(direction * max(self.body_height // 2, 1))

    def action_first(self) -> None:
        if self.at_start:
            self.cursor = self.top = 0
            self.refresh()
            self.post_message(self.Moved())
        else:
            self.load(self.query)

    def action_last(self) -> None:
        if self.at_end:
            self._move_by(len(self.rows))
        else:
            self.generation += 1
            self._fetch_last(self.generation)

    def action_toggle_mark(self) -> None:
        t = self.current
        if t is None:
            return
        if self.marked.pop(t.id, None) is None:
            self.marked[t.id] = t.version
        self._move_by(1)

    def action_clear_marks(self) -> None:
        self.marked.clear()
        self.refresh()
        self.post_message(self.Moved())

    def action_open(self) -> None:
        if self.current is not None:
            self.post_message(self.Opened(self.current))

    def on_resize(self) -> None:
        self._scroll_to_cursor()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._move_by(3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self._move_by(-3)

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = 2  # the mark and unread columns
            for column, width in self._layout():
                if x <= event.x < x + width + 1:
                    if column.key in SORTABLE:
                        self.post_message(self.SortRequested(column.key))
                    return
                x += width + 1
            return
        index = self.top + event.y - 1
        if 0 <= index < len(self.rows):
            if index == self.cursor and event.chain >= 2:
                self.action_open()
            self.cursor = index
            self.refresh()
            self.post_message(self.Moved())

    # ------------------------------------------------------------------ drawing

    def _layout(self) -> list[tuple[Column, int]]:
        width = self.size.width - 2  # mark + unread marker
        fixed = sum(c.width + 1 for c in COLUMNS if c.width)
        shares = sum(c.share for c in COLUMNS)
        rest = max(width - fixed - sum(1 for c in COLUMNS if not c.width), 0)
        out = []
        for c in COLUMNS:
            out.append((c, c.width if c.width else max(rest * c.share // shares, 4)))
        return out

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._header(width)
        index = self.top + y - 1
        if index >= len(self.rows):
            if not self.rows and y == 1:
                text = "loading…" if self.fetching_first or not self.loaded else "no tickets match"
                return Strip([Segment("  " + fit(text, width - 2))])
            return Strip.blank(width, self.rich_style)
        return self._row(self.rows[index], index == self.cursor, width)

    def _header(self, width: int) -> Strip:
        style = self.get_component_rich_style("ticket-list--header")
        sort, desc = self.query.sort, self.query.descending
        cells = ["  "]  # above the mark and unread columns
        for column, w in self._layout():
            cell = fit(column.title, w) + " "
            if column.key == sort:  # a narrow column lends its separator to the arrow
                arrow = "▼" if desc else "▲"
                wide = f"{column.title} {arrow}"
                title = wide if cell_len(wide) <= w else column.title[:w] + arrow
                cell = set_cell_size(title, w + 1)
            if column.key == "id":
                cell = cell.rstrip().rjust(w) + " "
            cells.append(cell)
        line = "".join(cells)
        line = set_cell_size(line, width) if cell_len(line) != width else line
        return Strip([Segment(line, style)])

    def _cells(self, t: TicketSummary, now: datetime) -> dict[str, str]:
        assignee = person_label(t.assignee.name, t.assignee.address) if t.assignee else ""
        return {
            "id": str(t.id),
            "queue": t.queue,
            "created": age(t.created_at, now),
            "prio": PRIO_SHORT.get(t.priority, t.priority),
            "status": STATUS_SHORT.get(t.status, t.status),
            "requester": person_label(t.requester.name, t.requester.address),
            "subject": ("⚠ " if "quarantined" in t.flags else "") + (t.subject or "(no subject)"),
            "assignee": assignee,
            "left": "",
        }

    @staticmethod
    def left_text(row: QueueRow) -> str:
        """Business time left on the nearest SLA target: 3d, 5h, 45m, -2h; ~ while paused."""
        if row.sla_left is None:
            return ""
        seconds = row.sla_left
        sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
        for unit, size in (("d", 86_400), ("h", 3_600)):
            if seconds >= size:
                text = f"{sign}{int(seconds // size)}{unit}"
                break
        else:
            text = f"{sign}{int(seconds // 60)}m"
        return ("~" if row.sla_state == "paused" else "") + text

    def _row(self, row: QueueRow, is_cursor: bool, width: int) -> Strip:
        t = row.ticket
        base = self.rich_style
        if t.status in ("resolved", "closed"):
            base += self.get_component_rich_style("ticket-list--done")
        if row.unread:
            base += self.get_component_rich_style("ticket-list--unread")
        if t.id in self.marked:
            base += self.get_component_rich_style("ticket-list--marked")
        if is_cursor:
            base += self.get_component_rich_style("ticket-list--cursor")
        cells = self._cells(t, datetime.now(UTC))
        cells["left"] = self.left_text(row)
        marker = ("*" if t.id in self.marked else " ") + ("●" if row.unread else " ")
        segments = [Segment(marker, base)]
        for column, w in self._layout():
            style = base
            accent_name = None
            if column.key == "prio" and t.priority in ("high", "urgent"):
                accent_name = f"ticket-list--{t.priority}"
            elif column.key == "left" and row.sla_state in ("at-risk", "breached"):
                accent_name = (
                    "ticket-list--high" if row.sla_state == "at-risk" else "ticket-list--urgent"
                )
            if accent_name is not None:
                # Only the colour: the row's background (cursor, mark) stays across the cell.
                accent = self.get_component_rich_style(accent_name)
                style = base + Style(color=accent.color, bold=accent.bold)
            text = cells["id"].rjust(w)[-w:] if column.key == "id" else fit(cells[column.key], w)
            segments += [Segment(text, style), Segment(" ", base)]
        used = sum(cell_len(s.text) for s in segments)
        if used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments).crop(0, width)
