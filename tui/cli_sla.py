"""``deskq sla check``: tickets at risk or breached, for cron and notifications."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from tui.cli import EXIT_FAILURE, EXIT_OK, _workspace


def human(seconds: float) -> str:
    """Business seconds as 3d 2h, 45m, -1h 30m."""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    hours, minutes = int(seconds // 3600), int(seconds % 3600 // 60)
    if hours >= 24:
        return f"{sign}{hours // 24}d {hours % 24}h"
    return f"{sign}{hours}h {minutes}m" if hours else f"{sign}{minutes}m"


def cmd_sla_check(args: argparse.Namespace) -> int:
    """Active tickets with under a quarter of a target left, or past it; exit 1 if any breached."""
    from sqlalchemy import select

    from store import access, clocks
    from store.models import Queue, Ticket, TicketClock

    ws = _workspace(args)
    now = datetime.now(UTC)
    try:
        with ws.db.session() as s:
            scope = access.scope_for(s, ws.settings.me)
            # Every target still open has a due time unless it is paused within it; the
            # paused ones can still be at risk, so take every active ticket's row.
            rows = s.execute(
                select(Ticket.id, Queue.key, Ticket.priority, Ticket.subject)
                .join(TicketClock, TicketClock.ticket_id == Ticket.id)
                .join(Queue, Queue.id == Ticket.queue_id)
                .where(
                    TicketClock.status.in_(["new", "open", "pending", "on-hold"]),
                    *([Ticket.queue_id.in_(scope)] if scope is not None else []),
                )
                .order_by(Ticket.id)
            ).all()
            found = clocks.reports(s, ws.db.keeper, [r[0] for r in rows], now)
    finally:
        ws.close()
    subjects = {r[0]: (r[1], r[3]) for r in rows}
    flagged: list[dict[str, Any]] = []
    for tid, report in found.items():
        for name, target in (
            ("first_response", report.first_response),
            ("resolution", report.resolution),
        ):
            if target.open and (target.breached or target.at_risk):
                flagged.append({
                    "ticket": tid,
                    "queue": subjects[tid][0],
                    "subject": subjects[tid][1],
                    "target": name,
                    "state": "breached" if target.breached else "at-risk",
                    "left_seconds": round(target.left or 0),
                    "due": target.due.isoformat().replace("+00:00", "Z") if target.due else None,
                })  # fmt: skip
    flagged.sort(key=lambda f: f["left_seconds"])
    breached = any(f["state"] == "breached" for f in flagged)
    if args.json:
        print(json.dumps(flagged, indent=2))
    else:
        from tui.safe_text import one_line

        for f in flagged:
            line = f"#{f['ticket']:<7} {f['queue']:<10} {f['state']:<9} {f['target']:<15} "
            line += f"{human(f['left_seconds']):>8}  {f['subject']}"
            print(one_line(line, 160))
        print(f"({len(flagged)} at risk or breached)")
    return EXIT_FAILURE if breached else EXIT_OK


def add_commands(sub: Any) -> None:
    """Register ``sla`` on the main parser."""
    p = sub.add_parser("sla", help="SLA commands")
    ssub = p.add_subparsers(title="sla commands", metavar="COMMAND", required=True)
    c = ssub.add_parser("check", help="tickets at risk or breached (exit 1 if any breached)")
    c.add_argument("--json", action="store_true", help="a JSON array")
    c.set_defaults(func=cmd_sla_check)
