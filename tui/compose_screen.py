"""Writing a reply: pick a template, edit the rendered text (inline or in $EDITOR), review, send.

The draft is written to disk as it changes (atomically), so a crash loses nothing:
the next ``r`` on the ticket offers to resume it. Sending is checked against the
ticket version the reply was composed on: if a message or another provider's change
came in since, the reply is held and the new activity shown first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from platformdirs import user_state_dir
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, OptionList, Static, TextArea

from mail import reply, templates
from store.services import ActionError, ConflictError
from tui.desk import Desk
from tui.dialogs import ChoiceDialog, ConflictDialog, TextDialog, notice, plain

SAVE_DELAY = 0.5  # seconds of quiet typing before the draft is written to disk


def drafts_dir(desk: Desk) -> Path:
    """One folder of drafts per database (``$DESKQ_DRAFTS_DIR`` overrides the place)."""
    root = Path(os.environ.get("DESKQ_DRAFTS_DIR") or Path(user_state_dir("deskq")) / "drafts")
    key = hashlib.sha256(str(desk.ws.db.engine.url).encode()).hexdigest()[:12]
    return root / key


def draft_path(desk: Desk, ticket_id: int) -> Path:
    """Where the draft reply to ``ticket_id`` is kept."""
    return drafts_dir(desk) / f"ticket-{ticket_id}.json"


def save_draft(path: Path, draft: reply.Draft) -> None:
    """Write atomically: a crash mid-write leaves the previous version, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(draft)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".draft-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def load_draft(path: Path) -> reply.Draft | None:
    """A saved draft, or None (missing or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("to", "cc"):
            data[key] = tuple(tuple(pair) for pair in data[key])
        data["references"] = tuple(data["references"])
        data["attachments"] = tuple(data.get("attachments", ()))
        return reply.Draft(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    return reply.parse_addresses(text) if text.strip() else ()


def _show_pairs(pairs: tuple[tuple[str, str], ...]) -> str:
    from email.utils import formataddr

    return ", ".join(formataddr(p) for p in pairs)


class ComposeScreen(Screen[bool]):
    """The reply being written; dismisses with True once it is queued."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("ctrl+e", "editor", "$EDITOR", priority=True),
        Binding("ctrl+t", "template", "Template", priority=True),
        Binding("ctrl+d", "keep", "Keep draft", priority=True),
        Binding("ctrl+a", "attach", "Attach", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, desk: Desk, draft: reply.Draft) -> None:
        super().__init__()
        self.desk, self.draft = desk, draft
        self.path = draft_path(desk, draft.ticket_id)
        self._save_timer: Any = None

    def compose(self) -> ComposeResult:
        with Vertical(id="compose"):
            yield Static(id="compose-title")
            with Horizontal(classes="compose-row"):
                yield Label("To ", classes="compose-label")
                yield Input(_show_pairs(self.draft.to), id="compose-to", compact=True)
            with Horizontal(classes="compose-row"):
                yield Label("Cc ", classes="compose-label")
                yield Input(
                    _show_pairs(self.draft.cc), id="compose-cc", placeholder="none", compact=True
                )
            with Horizontal(classes="compose-row"):
                yield Label("Subj ", classes="compose-label")
                yield Input(self.draft.subject, id="compose-subject", compact=True)
            yield TextArea(self.draft.body, id="compose-body", soft_wrap=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._title()
        self.query_one("#compose-body", TextArea).focus()
        save_draft(self.path, self.draft)

    def _title(self) -> None:
        d = self.draft
        after = f" · status after sending: {d.status_after}" if d.status_after else ""
        what = f"template {d.template}" if d.template else "no template"
        files = (
            " · attached: " + ", ".join(Path(a).name for a in d.attachments)
            if d.attachments
            else ""
        )
        self.query_one("#compose-title", Static).update(
            plain(f"Reply to #{d.ticket_id} · {what}{after}{files} · ctrl+s send, ctrl+e $EDITOR")
        )

    # ------------------------------------------------------------------ the draft

    def current(self) -> reply.Draft:
        """The draft as edited on screen (ValueError for an address that is not one)."""
        to = _pairs(self.query_one("#compose-to", Input).value)
        if not to:
            raise ValueError("a reply needs at least one address in To")
        return dataclasses.replace(
            self.draft,
            to=to,
            cc=_pairs(self.query_one("#compose-cc", Input).value),
            subject=self.query_one("#compose-subject", Input).value.strip() or self.draft.subject,
            body=self.query_one("#compose-body", TextArea).text.replace("\r\n", "\n"),
        )

    @on(TextArea.Changed)
    @on(Input.Changed)
    def _changed(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SAVE_DELAY, self._save)

    def _save(self) -> None:
        try:
            self.draft = self.current()
        except ValueError:
            return  # an address being typed: saved once it parses
        save_draft(self.path, self.draft)

    # ------------------------------------------------------------------ actions

    @work(group="send", exclusive=True, exit_on_error=False)
    async def action_send(self) -> None:
        try:
            draft = self.current()
        except ValueError as exc:
            notice(self.app, str(exc), "error")
            return
        save_draft(self.path, draft)
        while True:
            try:
                await asyncio.to_thread(self.desk.send_reply, draft)
                break
            except ConflictError as exc:
                # Something happened since composing: show it; sending waits for a decision.
                again = await self.app.push_screen_wait(ConflictDialog("reply", [exc]))
                if not again:
                    notice(self.app, "reply held: read the new activity, then send again")
                    return
                draft = dataclasses.replace(draft, version=exc.current)
            except ActionError as exc:
                notice(self.app, str(exc), "error", timeout=8)
                return
        self.path.unlink(missing_ok=True)
        notice(self.app, f"reply to #{draft.ticket_id} queued")
        self.dismiss(True)

    def action_editor(self) -> None:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        body = self.query_one("#compose-body", TextArea)
        with tempfile.NamedTemporaryFile(
            "w", suffix=".txt", prefix="deskq-reply-", delete=False, encoding="utf-8"
        ) as tmp:
            tmp.write(body.text)
        argv = [*shlex.split(editor), tmp.name]
        try:
            try:
                with self.app.suspend():
                    result = subprocess.run(argv, check=False)
            except SuspendNotSupported:
                # No terminal to hand over (a browser session): a graphical editor
                # (EDITOR="gedit --wait") still works; a terminal one fails and says so.
                result = subprocess.run(
                    argv, check=False, stdin=subprocess.DEVNULL, capture_output=True
                )
            if result.returncode != 0:
                what = f"{editor} exited with {result.returncode}: text unchanged"
                notice(self.app, what, "warning")
                return
            body.load_text(Path(tmp.name).read_text(encoding="utf-8"))
            self._save()
        except OSError as exc:
            notice(self.app, f"cannot run {editor}: {exc.strerror}", "error")
        finally:
            Path(tmp.name).unlink(missing_ok=True)

    @work(group="template", exclusive=True, exit_on_error=False)
    async def action_template(self) -> None:
        draft = await pick_and_render(self, self.desk, self.draft.ticket_id)
        if draft is not None:
            self.draft = dataclasses.replace(draft, to=self.current().to)
            self.query_one("#compose-body", TextArea).load_text(draft.body)
            self.query_one("#compose-subject", Input).value = draft.subject
            self._title()
            self._save()

    @work(group="attach", exclusive=True, exit_on_error=False)
    async def action_attach(self) -> None:
        def check(text: str) -> str | None:
            path = Path(text.strip()).expanduser()
            return None if path.is_file() else f"{path} is not a file"

        text = await self.app.push_screen_wait(
            TextDialog("Attach a file", placeholder="~/Documents/steps.pdf", check=check)
        )
        if text:
            path = str(Path(text.strip()).expanduser())
            self.draft = dataclasses.replace(
                self.current(), attachments=(*self.draft.attachments, path)
            )
            self._title()
            self._save()

    def action_keep(self) -> None:
        self._save()
        notice(self.app, f"draft kept: r on #{self.draft.ticket_id} resumes it")
        self.dismiss(False)

    @work(group="cancel", exclusive=True, exit_on_error=False)
    async def action_cancel(self) -> None:
        choice = await self.app.push_screen_wait(
            ChoiceDialog(
                "Leave this reply?",
                [
                    ("keep", "keep the draft for later"),
                    ("discard", "discard it"),
                    ("stay", "go on writing"),
                ],
            )
        )
        if choice == "discard":
            self.path.unlink(missing_ok=True)
            self.dismiss(False)
        elif choice == "keep":
            self.action_keep()


async def ask_variables(screen: Screen[Any], required: tuple[str, ...]) -> dict[str, str] | None:
    """One line per variable the template requires (None when cancelled)."""
    values: dict[str, str] = {}
    for name in required:
        value = await screen.app.push_screen_wait(
            TextDialog(
                f"{name.replace('_', ' ')} (the template needs it)",
                check=lambda v: None if v.strip() else "a value, please",
            )
        )
        if value is None:
            return None
        values[name] = value.strip()
    return values


class TemplatePicker(ChoiceDialog):
    """The template list with a live preview of the highlighted one, rendered on the ticket."""

    def __init__(self, desk: Desk, ticket_id: int, choices: list[tuple[str, str]]) -> None:
        super().__init__(f"Reply to #{ticket_id} with", choices)
        self.desk, self.ticket_id = desk, ticket_id
        self.add_class("template-picker")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="dialog dialog-wide picker"):
            yield from super().compose()
            yield Static(id="template-preview")

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._preview(event.option.id or "")

    @work(thread=True, group="preview", exclusive=True, exit_on_error=False)
    def _preview(self, name: str) -> None:
        try:
            text = self.desk.preview(self.ticket_id, name or None)
        except (templates.TemplateError, ActionError) as exc:
            text = f"(cannot render: {exc})"
        self.app.call_from_thread(self._show_preview, name, text)

    def _show_preview(self, name: str, text: str) -> None:
        # Previews render in threads: one for a template highlighted earlier can finish
        # after the current one's, and must not replace it.
        options = self.query_one(OptionList)
        index = options.highlighted
        current = options.get_option_at_index(index).id if index is not None else None
        if (current or "") != name:
            return
        self.query_one("#template-preview", Static).update(plain(text))


async def pick_and_render(screen: Screen[Any], desk: Desk, ticket_id: int) -> reply.Draft | None:
    """Fuzzy-pick a template (or none) with a preview, ask what it requires, render it."""
    found = await asyncio.to_thread(desk.templates_for, ticket_id)
    choices = [("", "(no template: a blank reply)")] + [(n, f"{n}: {d}") for n, d, _ in found]
    name = await screen.app.push_screen_wait(TemplatePicker(desk, ticket_id, choices))
    if name is None:
        return None
    required = next((r for n, _, r in found if n == name), ())
    values = await ask_variables(screen, required)
    if values is None:
        return None
    try:
        return await asyncio.to_thread(desk.compose, ticket_id, name or None, values)
    except (templates.TemplateError, ActionError) as exc:
        notice(screen.app, str(exc), "error", timeout=10)
        return None


async def start_reply(screen: Screen[Any], desk: Desk, ticket_id: int) -> bool:
    """``r``: resume a saved draft or start a new one; True when a reply was queued."""
    saved = load_draft(draft_path(desk, ticket_id))
    draft = None
    if saved is not None:
        choice = await screen.app.push_screen_wait(
            ChoiceDialog(
                f"A draft reply to #{ticket_id} is waiting",
                [("resume", "resume it"), ("new", "start a new reply (the draft is discarded)")],
            )
        )
        if choice is None:
            return False
        if choice == "resume":
            draft = saved
    if draft is None:
        draft = await pick_and_render(screen, desk, ticket_id)
    if draft is None:
        return False
    return bool(await screen.app.push_screen_wait(ComposeScreen(desk, draft)))
