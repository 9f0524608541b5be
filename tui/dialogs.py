"""Dialogs that return a value (``ModalScreen[T]`` + ``dismiss``), never reach into screens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.fuzzy import Matcher
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from store.services import ConflictError
from tui.safe_text import for_terminal


def plain(text: str) -> Text:
    """Untrusted text as a Rich Text that is never parsed as markup."""
    return Text(for_terminal(text))


def notice(
    app: App[Any], text: str, severity: SeverityLevel = "information", timeout: float = 4
) -> None:
    """A toast whose text is shown literally (it may quote a subject: never markup)."""
    app.notify(for_terminal(text), severity=severity, timeout=timeout, markup=False)


NEW_VALUE = "\x00new:"  # option id prefix of "what was typed" (no real value has NUL)


class ChoiceDialog(ModalScreen[str | None]):
    """Pick one of several values, narrowing the list by typing (fuzzy)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("down", "cursor(1)", "Next", show=False),
        Binding("up", "cursor(-1)", "Previous", show=False),
    ]

    def __init__(
        self,
        title: str,
        choices: Sequence[tuple[str, str]],
        *,
        allow_other: str | None = None,
        current: str | None = None,
        other_ok: Callable[[str], bool] = bool,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.choices = list(choices)
        self.allow_other = allow_other
        self.current = current
        self.other_ok = other_ok

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(self.title_text), classes="dialog-title")
            yield Input(placeholder=self.allow_other or "type to narrow", id="choice-filter")
            yield OptionList(id="choice-list")

    def on_mount(self) -> None:
        self._fill("")

    def _fill(self, needle: str) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        matcher = Matcher(needle) if needle else None
        scored = []
        for value, label in self.choices:
            score = matcher.match(label) if matcher else 1.0
            if score > 0:
                scored.append((score, value, label))
        typed = needle.strip()
        exact = [s for s in scored if typed and typed.lower() in (s[1].lower(), s[2].lower())]
        if matcher:
            scored.sort(key=lambda s: -s[0])
        entries = [(value, label) for _, value, label in scored]
        if self.allow_other and typed and not exact and self.other_ok(typed):
            # What was typed comes first: enter takes it as a new value; the
            # fuzzy matches below are one arrow key away.
            entries.insert(0, (NEW_VALUE + typed, f"+ {typed} (new)"))
        options.add_options(Option(plain(label), id=value) for value, label in entries)
        if entries:
            index = next((i for i, e in enumerate(entries) if e[0] == self.current), 0)
            if exact:
                index = next(i for i, e in enumerate(entries) if e[0] == exact[0][1])
            options.highlighted = index

    @on(Input.Changed, "#choice-filter")
    def _narrow(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#choice-filter")
    def _submit(self, event: Input.Submitted) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None and options.option_count:
            self._pick(options.get_option_at_index(options.highlighted).id)

    @on(OptionList.OptionSelected, "#choice-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self._pick(event.option.id)

    def _pick(self, value: str | None) -> None:
        if value is not None and value.startswith(NEW_VALUE):
            value = value[len(NEW_VALUE) :]
        self.dismiss(value)

    def action_cursor(self, delta: int) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            current = options.highlighted or 0
            options.highlighted = max(0, min(current + delta, options.option_count - 1))

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextDialog(ModalScreen[str | None]):
    """One line of text, checked before it is accepted."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        value: str = "",
        *,
        placeholder: str = "",
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text, self.value, self.placeholder, self.check = title, value, placeholder, check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(self.title_text), classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="text-value")
            yield Label("", id="text-error", classes="dialog-error")

    @on(Input.Submitted, "#text-value")
    def _submit(self, event: Input.Submitted) -> None:
        problem = self.check(event.value) if self.check else None
        if problem:
            self.query_one("#text-error", Label).update(plain(problem))
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class NoteDialog(ModalScreen[str | None]):
    """Several lines of text (an internal note); ctrl+s saves, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str, text: str = "") -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide"):
            yield Label(plain(self.title_text), classes="dialog-title")
            yield TextArea(self.text, id="note-text", soft_wrap=True)
            yield Label("ctrl+s save · escape cancel", classes="dialog-hint")

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        if text.strip():
            self.dismiss(text)
        else:
            notice(self.app, "a note needs some text", "warning")

    def action_cancel(self) -> None:
        self.dismiss(None)


def describe_change(kind: str, actor: str | None, data: dict[str, object]) -> str:
    """One line for an event, e.g. ``status by bob@corp: open → pending``."""
    detail = ""
    if "from" in data or "to" in data:
        detail = f": {data.get('from') or '-'} → {data.get('to') or '-'}"
        if data.get("reason"):
            detail += f" ({data['reason']})"
    elif data:
        detail = ": " + ", ".join(f"{k} {v}" for k, v in sorted(data.items()))
    return f"{kind} by {actor or 'deskq'}{detail}"


class ConflictDialog(ModalScreen[bool]):
    """Someone changed the ticket first: show what, then re-apply (True) or drop (False)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "decide(True)", "Re-apply"),
        Binding("d,escape", "decide(False)", "Drop"),
    ]

    def __init__(self, action: str, conflicts: Sequence[ConflictError]) -> None:
        super().__init__()
        self.action, self.conflicts = action, list(conflicts)

    def compose(self) -> ComposeResult:
        lines = []
        for c in self.conflicts:
            lines.append(
                f"#{c.ticket_id} changed since you looked (version {c.expected} → {c.current}):"
            )
            lines += [f"  v{v} {describe_change(k, a, d)}" for v, k, a, d in c.changes]
        with Vertical(classes="dialog dialog-wide"):
            yield Label(
                plain(f"Your {self.action} was not applied: another change came first"),
                classes="dialog-title",
            )
            with VerticalScroll(classes="conflict-changes"):
                yield Static(plain("\n".join(lines)))
            yield Label("r re-apply on top of these changes · d drop yours", classes="dialog-hint")

    def action_decide(self, reapply: bool) -> None:
        self.dismiss(reapply)


class HelpScreen(ModalScreen[None]):
    """Every key of the current screen, grouped."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        text = Text()
        for title, keys in self.sections:
            text.append(f"{title}\n", style="bold")
            for key, what in keys:
                text.append(f"  {key:<14}", style="bold cyan")
                text.append(f"{what}\n")
            text.append("\n")
        text.append("Every action is also in the command palette (ctrl+p).")
        with VerticalScroll(classes="dialog dialog-wide help"):
            yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)
