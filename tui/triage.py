"""Triage actions for the queue and ticket screens: ask for a value, apply, handle conflicts.

Each action has one key and one palette entry. The value is asked for once, then
applied to every target (the marked tickets, or the one in view). A conflict never
overwrites: the provider sees what changed and re-applies or drops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.binding import Binding

from store.config import is_address
from store.models import Priority, Status
from tui.desk import Desk, Outcome, Target
from tui.dialogs import ChoiceDialog, ConflictDialog, NoteDialog, TextDialog, notice

if TYPE_CHECKING:
    from textual.screen import Screen


@dataclass(frozen=True)
class TriageAction:
    """A triage action as shown in help, bindings and the palette."""

    name: str
    key: str
    title: str
    help: str


TRIAGE = (
    TriageAction("claim", "c", "Claim", "assign to me and open it"),
    TriageAction("assign", "a", "Assign…", "give it to a provider (or nobody)"),
    TriageAction("status", "s", "Status…", "new, open, pending, on-hold, resolved, closed"),
    TriageAction("priority", "p", "Priority…", "low, normal, high, urgent"),
    TriageAction("category", "C", "Category…", "set or clear the category"),
    TriageAction("tags", "t", "Tags…", "edit the tags"),
    TriageAction("note", "n", "Internal note…", "a note only providers see"),
    TriageAction("merge", "m", "Merge into…", "move its messages into another ticket"),
    TriageAction("split", "x", "Split out…", "make one message a ticket of its own"),
    TriageAction("link", "l", "Link to…", "relate it to another ticket"),
    TriageAction("release", "R", "Release", "let a quarantined ticket into its queue"),
)
BY_NAME = {a.name: a for a in TRIAGE}


def triage_bindings(shown: str) -> list[Binding]:
    """A key binding per triage action; those whose key is in ``shown`` go in the footer."""
    return [
        Binding(a.key, f"triage('{a.name}')", a.title.rstrip("…"), show=a.key in shown)
        for a in TRIAGE
    ]


def _ticket_number(text: str) -> str | None:
    return None if text.strip().lstrip("#").isdigit() else "a ticket number, e.g. 42"


async def ask_value(screen: Screen[Any], desk: Desk, action: str, targets: Sequence[Target]) -> Any:
    """Ask the provider for the action's value; None means cancelled (``...`` for no value)."""
    app = screen.app
    single = targets[0].id if len(targets) == 1 else None
    what = f"#{single}" if single else f"{len(targets)} tickets"
    if action in ("claim", "release"):
        return ...
    if action == "assign":
        people = await asyncio.to_thread(desk.providers)
        choices = [("", "nobody (unassign)")] + [(a, f"{n} <{a}>" if n else a) for a, n in people]
        value = await app.push_screen_wait(
            ChoiceDialog(
                f"Assign {what} to",
                choices,
                allow_other="or type an address",
                other_ok=is_address,
            )
        )
        return None if value is None else (value or "")
    if action == "status":
        choices = [(s.value, s.value) for s in Status]
        return await app.push_screen_wait(ChoiceDialog(f"Status of {what}", choices))
    if action == "priority":
        choices = [(p.value, p.value) for p in reversed(Priority)]
        return await app.push_screen_wait(ChoiceDialog(f"Priority of {what}", choices))
    if action == "category":
        known = await asyncio.to_thread(desk.categories)
        choices = [("", "none (clear)")] + [(c, c) for c in known]
        value = await app.push_screen_wait(
            ChoiceDialog(f"Category of {what}", choices, allow_other="or type a new category")
        )
        return None if value is None else (value or "")
    if action == "tags":
        return await app.push_screen_wait(
            TextDialog(f"Tags of {what} (space-separated; replaces them)", placeholder="vpn remote")
        )
    if action == "note":
        return await app.push_screen_wait(NoteDialog(f"Internal note on {what}"))
    if action in ("merge", "link"):
        verb = "Merge" if action == "merge" else "Link"
        text = await app.push_screen_wait(
            TextDialog(
                f"{verb} {what} {'into' if action == 'merge' else 'to'} ticket",
                check=_ticket_number,
            )
        )
        if text is None:
            return None
        other = int(text.strip().lstrip("#"))
        if action == "link":
            return other
        versions = await asyncio.to_thread(desk.versions, [other])
        if other not in versions:
            notice(app, f"there is no ticket #{other}", "error")
            return None
        return Target(other, versions[other])
    if action == "split":
        return await _ask_message(screen, desk, targets)
    raise KeyError(action)


async def _ask_message(screen: Screen[Any], desk: Desk, targets: Sequence[Target]) -> Any:
    app = screen.app
    if len(targets) != 1:
        notice(app, "split works on one ticket at a time", "warning")
        return None
    detail = await asyncio.to_thread(desk.detail, targets[0].id, False)
    if detail is None:
        return None
    choices = [
        (str(m.id), f"{m.date:%Y-%m-%d %H:%M} {m.from_addr}: {m.subject}")
        for m in detail.messages
        if m.direction == "inbound" and m.date is not None
    ]
    if len(choices) < 2:
        notice(app, "only a ticket with two or more received messages can be split", "warning")
        return None
    value = await app.push_screen_wait(ChoiceDialog("Split which message out?", choices))
    return None if value is None else int(value)


def report(screen: Screen[Any], action: str, outcome: Outcome) -> None:
    """Tell the provider how an action went, briefly."""
    app = screen.app
    title = BY_NAME[action].title.rstrip("…").lower()
    if outcome.done:
        ids = ", ".join(f"#{i}" for i in outcome.done[:5]) + ("…" if len(outcome.done) > 5 else "")
        extra = f" → new #{outcome.created[0]}" if outcome.created else ""
        notice(app, f"{title}: {ids}{extra}", timeout=3)
    for error in outcome.errors:
        notice(app, error, "error", timeout=8)


async def run_action(
    screen: Screen[Any], desk: Desk, action: str, targets: Sequence[Target]
) -> Outcome | None:
    """Ask, apply, and resolve conflicts; returns what happened (None when cancelled)."""
    if not targets:
        notice(screen.app, "no ticket selected", "warning")
        return None
    value = await ask_value(screen, desk, action, targets)
    if value is None:
        return None
    value = None if value is ... else value
    outcome = await asyncio.to_thread(desk.apply, action, targets, value)
    while outcome.conflicts:
        errors = [error for _, error in outcome.conflicts]
        reapply = await screen.app.push_screen_wait(ConflictDialog(action, errors))
        ids = [target.id for target, _ in outcome.conflicts]
        if not reapply:
            notice(screen.app, f"{action} dropped for " + ", ".join(f"#{i}" for i in ids))
            outcome.conflicts = []
            break
        extra = [value.id] if isinstance(value, Target) else []
        versions = await asyncio.to_thread(desk.versions, ids + extra)
        if isinstance(value, Target) and value.id in versions:
            value = Target(value.id, versions[value.id])
        again = await asyncio.to_thread(
            desk.apply, action, [Target(i, versions[i]) for i in ids if i in versions], value
        )
        outcome.done += again.done
        outcome.errors += again.errors
        outcome.created += again.created
        outcome.conflicts = again.conflicts
    report(screen, action, outcome)
    return outcome
