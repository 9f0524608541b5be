"""Plain-text and JSON output of the CLI. Email text is sanitised before it is printed."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any

from store.views import TicketDetail, TicketSummary, iso
from tui.safe_text import for_terminal, one_line


def write_json_array(out: IO[str], items: Iterable[dict[str, Any]]) -> None:
    """Stream a JSON array one element at a time (flat memory on a million tickets).

    Non-ASCII is escaped, so hostile characters reach a terminal only as ``\\uXXXX``.
    """
    out.write("[")
    first = True
    for item in items:
        out.write("\n  " if first else ",\n  ")
        out.write(json.dumps(item))
        first = False
    out.write("\n]\n" if not first else "]\n")


def age(since: datetime, now: datetime) -> str:
    """A compact age: 45s, 12m, 3h, 5d, 7w."""
    seconds = max(int((now - since).total_seconds()), 0)
    for size, unit in ((604800, "w"), (86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size * (2 if unit == "w" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_table(tickets: Iterable[TicketSummary], now: datetime, out: IO[str] = sys.stdout) -> None:
    """One line per ticket, fitted to the terminal width."""
    width = max(shutil.get_terminal_size((120, 24)).columns, 60)
    header = (
        f"{'ID':>6} {'QUEUE':<8} {'STATUS':<8} {'PRIO':<6} {'AGE':>4} "
        f"{'REQUESTER':<22} {'ASSIGNEE':<16} SUBJECT"
    )
    fixed = len(header) - len("SUBJECT")
    out.write(header + "\n")
    count = 0
    for t in tickets:
        assignee = t.assignee.address.split("@")[0] if t.assignee else "-"
        flags = "".join(f"[{f}] " for f in t.flags)
        out.write(
            f"{t.id:>6} {one_line(t.queue, 8):<8} {t.status:<8} {t.priority:<6} "
            f"{age(t.created_at, now):>4} {one_line(t.requester.address, 22):<22} "
            f"{one_line(assignee, 16):<16} {one_line(flags + t.subject, width - fixed)}\n"
        )
        count += 1
    out.write(f"({count} ticket{'s' if count != 1 else ''})\n")


def print_detail(d: TicketDetail, out: IO[str] = sys.stdout) -> None:
    """A ticket as readable text: header, flags, links, conversation, history."""
    t = d.ticket
    out.write(f"#{t.id} [{t.queue}] {one_line(t.subject, 200)}\n")
    who = t.assignee.address if t.assignee else "nobody"
    out.write(f"status {t.status}, priority {t.priority}, assigned to {who}, version {t.version}\n")
    out.write(
        f"requester {one_line(t.requester.name, 60)} <{one_line(t.requester.address, 80)}>"
        f", created {iso(t.created_at)}\n"
    )
    if t.category or t.tags:
        tags = one_line(", ".join(t.tags), 300) or "-"
        out.write(f"category {one_line(t.category or '-', 100)}, tags {tags}\n")
    for flag, detail in sorted(d.flag_details.items()):
        out.write(f"FLAG {flag}: {one_line(detail, 300)}\n")
    for other, kind in d.links:
        out.write(f"linked ({kind}) to #{other}\n")
    for m in d.messages:
        out.write(f"\n--- {m.direction} #{m.id}  {iso(m.date) or ''}  ({m.threaded_by})\n")
        out.write(f"From: {one_line(m.from_addr, 200)}\n")
        if m.to:
            out.write(f"To: {one_line(m.to, 300)}\n")
        if m.cc:
            out.write(f"Cc: {one_line(m.cc, 300)}\n")
        out.write(f"Subject: {one_line(m.subject, 300)}\n\n")
        out.write(for_terminal(m.text).rstrip() + "\n")
        for a in m.attachments:
            out.write(
                f"[attachment] {one_line(a.filename, 120)} "
                f"({one_line(a.media_type, 80)}, {a.size} bytes)\n"
            )
    out.write("\n--- history\n")
    for e in d.events:
        data = one_line(json.dumps(e.data), 200) if e.data else ""
        out.write(f"{iso(e.at)}  v{e.version}  {e.kind:<10} {e.actor or 'deskq':<24} {data}\n")
