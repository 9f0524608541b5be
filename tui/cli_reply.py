"""``deskq reply``, ``deskq outbox`` and ``deskq templates``: replying from scripts.

Imports stay lazy, as in :mod:`tui.cli`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

from tui.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UserError, _settings, _workspace

if TYPE_CHECKING:
    from store.workspace import Workspace


def _variables(pairs: list[str] | None) -> dict[str, str]:
    found = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UserError(
                f"--set {pair!r}: use --set name=value (name: letters, digits, _)", EXIT_USAGE
            )
        found[key.strip()] = value
    return found


def _actor(ws: Workspace, session: Any) -> Any:
    from store import services

    if not ws.settings.me:
        raise UserError('set me = "your address" in the config to reply', EXIT_USAGE)
    return services.get_or_create_person(session, ws.settings.me, ws.settings.name, provider=True)


def send_now(ws: Workspace) -> list[str]:
    """Deliver what is due now; returns one line per item that did not go."""
    from mail import sender
    from store.models import OutboxItem

    if ws.settings.sending is None:
        return ["no [sending] in the config: the reply stays queued until one is set"]
    report = sender.send_due(
        ws.db,
        sender.make_transport(ws.settings.sending),
        after_sent=sender.sent_copier(ws.settings, ws.db),
    )
    problems = []
    with ws.db.session() as s:
        for oid in report.retrying + report.failed:
            item = s.get_one(OutboxItem, oid)
            what = "failed" if oid in report.failed else "will be retried"
            problems.append(f"outbox {oid} {what}: {item.last_error}")
    return problems


def _send_and_report(ws: Workspace) -> int:
    problems = send_now(ws)
    for line in problems:
        print(f"deskq: {line}", file=sys.stderr)
    return EXIT_FAILURE if problems else EXIT_OK


def cmd_reply(args: argparse.Namespace) -> int:
    """Reply to a ticket with a template (or a text), queue it, optionally send it now."""
    from mail import reply, templates
    from store import services

    if (args.template is None) == (args.text is None):
        raise UserError("give --template NAME or --text TEXT (one of them)", EXIT_USAGE)
    variables = _variables(args.set)
    text = sys.stdin.read() if args.text == "-" else args.text
    ws = _workspace(args)
    try:
        with ws.db.write() as s:
            actor = _actor(ws, s)
            try:
                draft = reply.compose(
                    s,
                    ws.settings,
                    args.id,
                    actor,
                    template=args.template,
                    body=text,
                    variables=variables,
                    quote=not args.no_quote,
                )
                draft = dataclasses.replace(draft, attachments=tuple(args.attach or ()))
            except templates.TemplateError as exc:
                hint = " (give values with --set NAME=VALUE)" if " requires " in str(exc) else ""
                raise UserError(f"{exc}{hint}") from None
            if args.dry_run:
                print(f"To: {', '.join(a for _, a in draft.to)}\nSubject: {draft.subject}\n")
                print(draft.body, end="")
                s.rollback()
                return EXIT_OK
            if args.note:
                note = services.add_note(s, args.id, draft.version, actor, draft.body)
                print(f"ticket #{args.id}: internal note {note.id} added")
                return EXIT_OK
            row = reply.queue(s, ws.settings, draft, actor)
            print(f"ticket #{args.id}: reply queued ({row.message_id})")
        if args.send:
            return _send_and_report(ws)
    finally:
        ws.close()
    return EXIT_OK


def cmd_outbox_list(args: argparse.Namespace) -> int:
    """Queued, sending and failed mail (with --all: sent too)."""
    from sqlalchemy import select

    from store.models import OutboxItem, OutboxState
    from store.views import iso

    ws = _workspace(args)
    try:
        with ws.db.session() as s:
            stmt = select(OutboxItem).order_by(OutboxItem.id)
            if not args.all:
                stmt = stmt.where(OutboxItem.state != OutboxState.SENT)
            items = [
                {
                    "id": i.id,
                    "ticket": i.ticket_id,
                    "kind": i.kind,
                    "state": i.state.value,
                    "to": i.recipients,
                    "attempts": i.attempts,
                    "next_attempt_at": iso(i.next_attempt_at),
                    "sent_at": iso(i.sent_at),
                    "last_error": i.last_error,
                    "message_id": i.message_id,
                }
                for i in s.scalars(stmt)
            ]
    finally:
        ws.close()
    if args.json:
        print(json.dumps(items, indent=2))
        return EXIT_OK
    from tui.safe_text import one_line

    for i in items:
        ticket = i["ticket"] or "-"
        line = f"{i['id']:>6} #{ticket:<6} {i['state']:<8} {i['kind']:<8} {i['attempts']:>2}x "
        line += str(i["to"])
        print(one_line(line, 200))
        if i["last_error"]:
            print("       " + one_line(i["last_error"], 190))
    print(f"({len(items)} item{'s' if len(items) != 1 else ''})")
    return EXIT_OK


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    """Queue a failed (or waiting) item again, due now."""
    from mail import sender

    ws = _workspace(args)
    try:
        sender.retry(ws.db, args.id)
        print(f"outbox {args.id}: queued again")
        if args.send:
            return _send_and_report(ws)
    finally:
        ws.close()
    return EXIT_OK


def _folders(args: argparse.Namespace) -> list[Any]:
    from mail.reply import template_folders

    settings = _settings(args)
    return template_folders(settings, args.queue or "")


def cmd_templates_list(args: argparse.Namespace) -> int:
    """Every template: name, status after sending, description, where it comes from."""
    from mail import templates

    for t in templates.available(_folders(args)):
        origin = "shipped" if t.path.parent == templates.SHIPPED else str(t.path.parent)
        after = f"-> {t.status_after}" if t.status_after else ""
        print(f"{t.name:<14} {after:<12} {t.description} ({origin})")
    return EXIT_OK


def cmd_templates_show(args: argparse.Namespace) -> int:
    """A template's front matter and text."""
    from mail import templates

    try:
        t = templates.find(args.name, _folders(args))
    except templates.TemplateError as exc:
        raise UserError(str(exc)) from None
    print(f"# {t.path}")
    print(t.path.read_text(encoding="utf-8"), end="")
    return EXIT_OK


SAMPLE_VALUES = {
    "question": "Which version of the VPN client do you have?",
    "workaround": "Connect with the web portal at https://vpn.corp.example.",
    "team": "Facilities",
    "team_address": "facilities@corp.example",
    "duplicate_of": "41",
    "reason": "This needs a budget we do not have this year.",
    "resolution": "We replaced the docking station.",
}


def cmd_templates_check(args: argparse.Namespace) -> int:
    """Render every template against a sample ticket; report each error with its line."""
    from datetime import UTC, datetime

    from mail import templates

    ctx: dict[str, Any] = {
        "ticket": {"id": 42, "subject": "VPN drops every 10 minutes", "status": "open",
                   "priority": "normal", "category": "network",
                   "created_at": datetime(2026, 1, 5, 9, 0, tzinfo=UTC), "reference": "[IT #42]"},
        "requester": {"name": "Amara Okafor", "address": "amara.okafor@corp.example"},
        "provider": {"name": "Alex Provider", "address": "alex@corp.example"},
        "queue": {"key": "it", "name": "IT Help", "tag": "IT", "address": "it-help@corp.example",
                  "signature": ""},
        "message": {"from": "Amara Okafor <amara.okafor@corp.example>", "date": None,
                    "subject": "VPN drops", "text": "It drops again."},
        "sla": {},
    }  # fmt: skip
    bad = 0
    try:
        found = templates.available(_folders(args))
    except templates.TemplateError as exc:
        raise UserError(str(exc)) from None
    for t in found:
        values = {k: SAMPLE_VALUES.get(k, f"<{k}>") for k in t.requires}
        try:
            templates.render(t, {**ctx, **values})
            print(f"ok     {t.name}")
        except templates.TemplateError as exc:
            bad += 1
            print(f"ERROR  {exc}")
    return EXIT_FAILURE if bad else EXIT_OK


def add_commands(sub: Any) -> None:
    """Register reply, outbox and templates on the main parser's subcommands."""
    p = sub.add_parser("reply", help="reply to a ticket (template or text); queued for the sender")
    p.add_argument("id", type=int, metavar="ID", help="ticket number")
    p.add_argument("--template", metavar="NAME", help="a template (see 'deskq templates list')")
    p.add_argument("--text", metavar="TEXT", help="the reply's text instead ('-': stdin)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a template variable")
    p.add_argument("--no-quote", action="store_true", help="leave out the answered message")
    p.add_argument("--attach", action="append", metavar="FILE", help="send a file along")
    p.add_argument("--note", action="store_true", help="add it as an internal note, send nothing")
    p.add_argument("--send", action="store_true", help="deliver now instead of by the sender")
    p.add_argument("--dry-run", action="store_true", help="print the rendered reply, queue nothing")
    p.set_defaults(func=cmd_reply)

    p = sub.add_parser("outbox", help="outgoing mail: list, retry")
    osub = p.add_subparsers(title="outbox commands", metavar="COMMAND", required=True)
    c = osub.add_parser("list", help="queued, sending and failed mail")
    c.add_argument("--all", action="store_true", help="sent mail too")
    c.add_argument("--json", action="store_true", help="a JSON array")
    c.set_defaults(func=cmd_outbox_list)
    c = osub.add_parser("retry", help="queue a failed item again")
    c.add_argument("id", type=int, metavar="ID", help="outbox item number")
    c.add_argument("--send", action="store_true", help="deliver now")
    c.set_defaults(func=cmd_outbox_retry)

    p = sub.add_parser("templates", help="reply templates: list, show, check")
    tsub = p.add_subparsers(title="templates commands", metavar="COMMAND", required=True)
    for name, func, helptext in (
        ("list", cmd_templates_list, "every template and where it comes from"),
        ("check", cmd_templates_check, "render every template against a sample ticket"),
    ):
        c = tsub.add_parser(name, help=helptext)
        c.add_argument("--queue", metavar="Q", help="include this queue's template folders")
        c.set_defaults(func=func)
    c = tsub.add_parser("show", help="a template's front matter and text")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--queue", metavar="Q", help="include this queue's template folders")
    c.set_defaults(func=cmd_templates_show)
