"""Report benchmark: ``deskq report`` and the cost of keeping SLA clocks, per new event.

On a generated SQLite database (tests/bench/gendb.py: about six events a ticket, every
ticket's clocks computed; built once under the cache folder), measures:

  report_ms        a report the way ``deskq report`` makes it (``make_report``, which is
                   ``store.report.build``) for all time and for the last 30 days, by
                   queue, provider and week: p50 and max of ``--runs``, "now" being the
                   generator's end of history;
  touch_ms         the clock hook's own time for each new event (``store.clocks.touch``,
                   wrapped), over ``--writes`` writes through the store services on
                   random open tickets (status changes and replies delivered): p50/p95;
  write_ms         the whole write (session to commit) with the hook and, interleaved,
                   the same writes on other tickets without it: p50/p95.

The writes go to a copy of the database, so the cached one stays as generated. The
baselines, measured in the same run so figures compare across machines: a plain scan
of the clocks (``SELECT queue_id, count(*) FROM ticket_clocks GROUP BY queue_id``), and
replaying one ticket's whole log with ``store.sla.clocks_for``. Targets at 1M tickets:
a report < 2 s, the hook < 5 ms per event. Prints one JSON line; a summary on stderr.

Usage: python tests/bench/report.py [--tickets 1000000] [--runs 5] [--writes 200] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import select, text

from store import clocks
from store.config import parse_settings
from store.db import Database
from store.models import Event, Person, Status, Ticket
from store.services import record_event, set_status
from store.sla import clocks_for
from store.workspace import Workspace
from tests.bench.gendb import END, SETTINGS, cached
from tui.cli_report import make_report

BY = ("queue", "provider", "week")
# What a write does to a ticket in each status: a status change, or a reply delivered.
NEXT = {
    Status.NEW: (Status.OPEN,),
    Status.OPEN: (Status.PENDING, Status.ON_HOLD, Status.RESOLVED, "sent", "sent"),
    Status.PENDING: (Status.OPEN, "sent"),
    Status.ON_HOLD: (Status.OPEN,),
    Status.RESOLVED: (Status.OPEN,),
    Status.CLOSED: ("sent",),
}


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def open_db(path: Path) -> tuple[Workspace, int]:
    """The database with the generator's calendar and rules, kept from now on.

    Also returns how many tickets' clocks opening recomputed (0 unless the clock rules
    changed since the build: ``store.clocks.FORMAT``).
    """
    settings = parse_settings(f'[database]\nurl = "sqlite:///{path}"\n{SETTINGS}')
    db = Database.open(settings.database.url)
    return Workspace(settings, db), db.keep_clocks(clocks.Keeper.from_settings(settings))


def reports(ws: Workspace, runs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """p50/max of each report (ms), and the all-time totals (a check that they are real)."""
    out: dict[str, Any] = {}
    for since in ("all", "30d"):
        for by in BY:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                make_report(ws, since, None, by, END)
                times.append(time.perf_counter() - t0)
            out[f"{since}/{by}"] = {"p50": ms(statistics.median(times)), "max": ms(max(times))}
    total = make_report(ws, "all", None, "queue", END).total.as_dict()
    keys = ("received", "open", "first_response_attainment", "resolution_attainment")
    figures = {k: total[k] for k in (*keys, "reopens", "rated", "satisfaction")}
    figures["first_response_median_h"] = round((total["first_response"]["median"] or 0) / 3600, 2)
    return out, figures


def baselines(ws: Workspace, runs: int, sample: int = 1000) -> dict[str, float]:
    """A plain scan of the clocks, and one ticket's log replayed (no database in the timing)."""
    scan = []
    with ws.db.session() as s:
        for _ in range(runs):
            t0 = time.perf_counter()
            s.execute(text("SELECT queue_id, count(*) FROM ticket_clocks GROUP BY queue_id")).all()
            scan.append(time.perf_counter() - t0)
        top = s.scalar(select(Ticket.id).order_by(Ticket.id.desc()).limit(1)) or 0
        ids = random.Random(1).sample(range(1, top + 1), min(sample, top))
        logs: dict[int, list[Any]] = {tid: [] for tid in ids}
        rows = s.execute(
            select(Event.ticket_id, Event.at, Event.kind, Event.data)
            .where(Event.ticket_id.in_(ids))
            .order_by(Event.ticket_id, Event.id)
        )
        for tid, at, kind, data in rows:
            logs[tid].append((at, kind, data or {}))
    calendar = clocks.Keeper.from_settings(ws.settings).calendar
    for log in logs.values():  # the calendar caches its days: fill it first, as a live one has
        clocks_for(calendar, log)
    t0 = time.perf_counter()
    for log in logs.values():
        clocks_for(calendar, log)
    replay = time.perf_counter() - t0
    events = sum(len(log) for log in logs.values())
    return {
        "scan_group_by_queue_ms": ms(statistics.median(scan)),
        "replay_us_per_ticket": round(replay / len(logs) * 1e6, 1),
        "replay_us_per_event": round(replay / max(events, 1) * 1e6, 2),
    }


def one_write(db: Database, tid: int, hooked: bool, rng: random.Random) -> float:
    """One action on ticket ``tid`` as the app or the sender does it; its time (s)."""
    t0 = time.perf_counter()
    info = {} if hooked else {"clocks": None}  # no keeper: the hook leaves the clocks alone
    with db._write(info=info) as s, s.begin():
        ticket = s.get(Ticket, tid)
        assert ticket is not None
        action = rng.choice(NEXT[ticket.status])
        if action == "sent":  # what mail.sender records once a reply is delivered
            record_event(s, ticket, "sent", None, {"outbox": 0, "kind": "reply"})
        else:
            set_status(s, tid, ticket.version, s.get(Person, 1), Status(action))
    return time.perf_counter() - t0


def writes(path: Path, count: int, scratch: Path) -> dict[str, Any]:
    """Writes on random open tickets of a copy, half with the clock hook, half without."""
    copy = scratch / "deskq.db"
    shutil.copyfile(path, copy)
    ws, _ = open_db(copy)
    with ws.db.session() as s:
        opened = list(
            s.scalars(
                select(Ticket.id).where(
                    Ticket.status == Status.OPEN, Ticket.merged_into_id.is_(None)
                )
            )
        )
    rng = random.Random(2)
    rng.shuffle(opened)
    hooked, plain = opened[::2], opened[1::2]  # apart, so hooked clocks are always current
    spent: list[float] = []
    real = clocks.touch

    def timed(session: Any, ticket_ids: Any, keeper: Any = None) -> None:
        t0 = time.perf_counter()
        real(session, ticket_ids, keeper)
        if session.info.get("clocks") is not None:
            spent.append(time.perf_counter() - t0)

    clocks.touch = timed  # the flush hook looks it up on each call
    try:
        with_hook, without = [], []
        for _ in range(count):
            with_hook.append(one_write(ws.db, rng.choice(hooked), True, rng))
            without.append(one_write(ws.db, rng.choice(plain), False, rng))
    finally:
        clocks.touch = real
        ws.close()
    return {
        "open_tickets": len(opened),
        "touch_ms": {"p50": ms(statistics.median(spent)), "p95": ms(pct(spent, 0.95))}
        | {"max": ms(max(spent)), "calls": len(spent)},
        "write_ms": {
            "with_hook_p50": ms(statistics.median(with_hook)),
            "with_hook_p95": ms(pct(with_hook, 0.95)),
            "without_hook_p50": ms(statistics.median(without)),
            "without_hook_p95": ms(pct(without, 0.95)),
        },
    }


def summary(out: dict[str, Any]) -> str:
    """The figures for people."""
    rows = [f"report bench, {out['tickets']:,} tickets, {out['events']:,} events"]
    rows.append(f"  clock rebuild at build: {out['clocks_rebuild_s']} s")
    for name, t in out["report_ms"].items():
        rows.append(f"  report {name:<13} p50 {t['p50']:>9.1f} ms   max {t['max']:>9.1f} ms")
    touch, write, base = out["touch_ms"], out["write_ms"], out["baseline"]
    rows.append(f"  hook per event        p50 {touch['p50']} ms, p95 {touch['p95']} ms")
    rows.append(
        f"  write with hook       p50 {write['with_hook_p50']} ms, "
        f"without {write['without_hook_p50']} ms"
    )
    rows.append(
        f"  baseline: scan {base['scan_group_by_queue_ms']} ms, "
        f"replay {base['replay_us_per_ticket']} us a ticket"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="of each report")
    parser.add_argument("--writes", type=int, default=200, help="with the hook (and without)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "deskq-bench"))
    parser.add_argument("--progress", action="store_true", help="report the build on stderr")
    args = parser.parse_args()
    cache = Path(args.cache)
    path, built = cached(args.tickets, cache, progress=args.progress)
    ws, recomputed = open_db(path)
    try:
        t0 = time.perf_counter()
        report_ms, figures = reports(ws, args.runs)
        base = baselines(ws, args.runs)
    finally:
        ws.close()
    with tempfile.TemporaryDirectory(dir=cache, prefix="report-") as scratch:
        written = writes(path, args.writes, Path(scratch))
    worst = max(t["p50"] for t in report_ms.values())
    out = {
        "benchmark": "report",
        "tickets": built["tickets"],
        "events": built["events"],
        "build_s": built["seconds"],
        "clocks_rebuild_s": built["clocks_seconds"],
        "recomputed_on_open": recomputed,
        "report_ms": report_ms,
        "report_figures": figures,
        **written,
        "baseline": base,
        "ratios": {
            "report_all_queue_to_scan": round(
                report_ms["all/queue"]["p50"] / max(base["scan_group_by_queue_ms"], 0.001), 1
            ),
            "touch_to_replay": round(
                written["touch_ms"]["p50"] * 1000 / max(base["replay_us_per_ticket"], 0.001), 1
            ),
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "report_worst_p50_ms": worst,
        "targets": {"report_p50_ms": "< 2000", "touch_p50_ms": "< 5"},
    }
    print(summary(out), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
