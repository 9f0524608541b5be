"""``deskq providers ...`` (who works which queue) and ``deskq audit`` (who did what)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tui.cli import EXIT_OK, EXIT_USAGE, UserError, _workspace
from tui.safe_text import one_line


def cmd_providers_list(args: argparse.Namespace) -> int:
    """Providers with their queues and PostgreSQL roles."""
    from store import access

    ws = _workspace(args)
    try:
        with ws.db.session() as s:
            found = access.providers(s)
    finally:
        ws.close()
    if args.json:
        print(json.dumps([p.as_json() for p in found], indent=2))
        return EXIT_OK
    if not found:
        print("no providers are members of a queue: every queue is open to every provider")
        return EXIT_OK
    width = max(len(p.address) for p in found)
    for p in found:
        queues = ", ".join(f"{q}" + (" (config)" if src == "config" else "") for q, src in p.queues)
        role = f"role {p.role}" if p.role else "no role"
        print(f"{one_line(p.address, 320):<{width}}  {role:<20}  {one_line(queues, 200) or '-'}")
    return EXIT_OK


def cmd_providers_add(args: argparse.Namespace) -> int:
    """Make ADDRESS a provider of the queues; a queue with providers is theirs only."""
    from store import access

    ws = _workspace(args)
    try:
        with ws.db.write() as s:
            person = access.add(s, args.address, args.queue, name=args.name, role=args.role)
            queues = ", ".join(args.queue)
            line = f"{person.address} is a provider of {queues} (role {person.db_role})"
    except access.AccessError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    finally:
        ws.close()
    print(line)
    return EXIT_OK


def cmd_providers_remove(args: argparse.Namespace) -> int:
    """Take ADDRESS off queues (every queue it was added to, by default)."""
    from store import access

    ws = _workspace(args)
    try:
        with ws.db.write() as s:
            removed = access.remove(s, args.address, args.queue or None, reopen=args.reopen)
    except access.AccessError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    finally:
        ws.close()
    print(f"{args.address}: removed from {removed} queue(s)")
    return EXIT_OK


def cmd_providers_roles(args: argparse.Namespace) -> int:
    """PostgreSQL: create each provider's login role and grant the group deskq's tables."""
    from store import access

    ws = _workspace(args)
    try:
        with ws.db.write() as s:
            done = access.apply_roles(s)
    except access.AccessError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    finally:
        ws.close()
    for line in done:
        print(line)
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """Who viewed or changed which ticket, newest first."""
    from sqlalchemy import select

    from store import access
    from store.models import Event, Person

    ws = _workspace(args)
    try:
        with ws.db.session() as s:
            stmt = (
                select(Event.at, Event.ticket_id, Person.address, Event.kind, Event.data)
                .outerjoin(Person, Person.id == Event.actor_id)
                .order_by(Event.id.desc())
                .limit(args.limit)
            )
            if args.ticket is not None:
                stmt = stmt.where(Event.ticket_id == args.ticket)
            if args.by:
                stmt = stmt.where(Person.address == args.by.strip().lower())
            if args.since:
                stmt = stmt.where(Event.at >= datetime.now(UTC) - _days(args.since))
            if args.kind:
                stmt = stmt.where(Event.kind == args.kind)
            scope = access.scope_for(s, ws.settings.me)
            if scope is not None:
                from store.models import Ticket

                visible = select(Ticket.id).where(Ticket.queue_id.in_(scope))
                stmt = stmt.where(Event.ticket_id.in_(visible))
            rows = s.execute(stmt).all()
    finally:
        ws.close()
    out: list[dict[str, Any]] = [
        {
            "at": at.isoformat(),
            "ticket": tid,
            "actor": actor,
            "kind": kind,
            "data": data,
        }
        for at, tid, actor, kind, data in rows
    ]
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    for row in out:
        detail = ", ".join(f"{k}={v}" for k, v in sorted((row["data"] or {}).items()))
        print(
            one_line(
                f"{row['at'][:19]}  #{row['ticket']:<7} {row['actor'] or '(deskq)':<30} "
                f"{row['kind']:<10} {detail}",
                200,
            )
        )
    return EXIT_OK


def _days(text: str) -> timedelta:
    try:
        days = int(text.rstrip("d"))
    except ValueError:
        raise UserError(f"--since {text!r}: use a number of days, e.g. 7d", EXIT_USAGE) from None
    return timedelta(days=days)


def add_commands(sub: Any) -> None:
    """Register ``providers`` and ``audit`` on the main parser."""
    p = sub.add_parser("providers", help="who works which queue (access per queue)")
    p.add_argument("--json", action="store_true", help="a JSON array")
    p.set_defaults(func=cmd_providers_list)
    psub = p.add_subparsers(title="providers commands", metavar="COMMAND")
    c = psub.add_parser("list", help="providers, their queues and roles (the default)")
    c.add_argument("--json", action="store_true", help="a JSON array")
    c.set_defaults(func=cmd_providers_list)
    c = psub.add_parser("add", help="make ADDRESS a provider of queues")
    c.add_argument("address", metavar="ADDRESS")
    c.add_argument(
        "--queue", action="append", required=True, metavar="Q", help="a queue key (repeatable)"
    )
    c.add_argument("--name", help="display name")
    c.add_argument("--role", help="PostgreSQL role it logs in as (default: from the address)")
    c.set_defaults(func=cmd_providers_add)
    c = psub.add_parser("remove", help="take ADDRESS off queues (all by default)")
    c.add_argument("address", metavar="ADDRESS")
    c.add_argument("--queue", action="append", metavar="Q", help="only this queue (repeatable)")
    c.add_argument(
        "--reopen", action="store_true", help="allow taking the last provider off a queue"
    )
    c.set_defaults(func=cmd_providers_remove)
    c = psub.add_parser(
        "roles", help="PostgreSQL: create the providers' login roles and grant table access"
    )
    c.set_defaults(func=cmd_providers_roles)

    p = sub.add_parser("audit", help="who viewed or changed what, newest first")
    p.add_argument("--ticket", type=int, metavar="ID", help="one ticket")
    p.add_argument("--by", metavar="ADDRESS", help="one person")
    p.add_argument("--kind", help="one kind of event, e.g. viewed, status, assigned")
    p.add_argument("--since", metavar="DAYS", help="the last N days, e.g. 7d")
    p.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    p.add_argument("--json", action="store_true", help="a JSON array")
    p.set_defaults(func=cmd_audit)
