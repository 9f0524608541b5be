"""Team benchmark: 20 providers at work on PostgreSQL while the poller ingests 10,000 emails.

Starts a throwaway PostgreSQL cluster and Dovecot (tests/servers.py), both private to
the run, and measures two phases on fresh databases that already hold ``--existing``
tickets (the work the providers act on):

  baseline   ``deskq poll --once`` ingests ``--messages`` emails, nobody else working;
  team       the same, while ``--providers`` provider processes act meanwhile, each
             with its own connections as on its own host, through ``tui.desk.Desk``
             (the TUI's own door to the store): claim an unassigned ticket, change a
             status, add a note, or reply (composed and queued as the send key does),
             on a random active ticket read just before, with ``--think`` seconds
             between actions (a provider acting every second is far busier than a
             person).

Figures:
  action_ms       p50/p95 of each action's own time (from the call to its commit),
                  overall and per kind;
  ingest          messages/s of both phases and their ratio (team / baseline);
  conflicts       actions refused because the ticket changed since it was read (the
                  version check; the TUI shows what changed): detected, not lost;
  lost_updates    actions reported done whose change is not in the ticket's log (each
                  done action must own exactly one version of its ticket);
  deadlocks       pg_stat_database.deadlocks during the phase, plus deadlock errors
                  seen by any client.

Targets: action p95 < 50 ms, ingest ratio >= 0.8, lost updates 0, deadlocks 0.
Prints one JSON line; a summary on stderr.

Usage: python tests/bench/team.py [--providers 20] [--messages 10000] [--existing 2000]
                                  [--think 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.ingest import DESKQ, QUEUES, corpus, mailbox_toml, seed_folder
from tests.servers import (
    Dovecot,
    PostgresCluster,
    dovecot_unavailable_reason,
    postgres_unavailable_reason,
)

KINDS = ("claim", "status", "note", "reply")
WEIGHTS = (0.25, 0.30, 0.30, 0.15)
NEXT_STATUS = {
    "new": ("open",),
    "open": ("pending", "on-hold", "resolved"),
    "pending": ("open", "resolved"),
    "on-hold": ("open",),
    "resolved": ("open",),
}


def config_text(url: str, dovecot: Dovecot | None, user: str = "", me: str = "") -> str:
    text = f'me = "{me}"\n[database]\nurl = "{url}"\n[ingest]\nbatch_size = 200\n'
    if dovecot is not None:
        text += mailbox_toml(dovecot, user, "team")
    return text + QUEUES


def poll(config: Path, password: str) -> float:
    """Seconds of one ``deskq poll --once``."""
    started = time.perf_counter()
    subprocess.run(
        [DESKQ, "--config", str(config), "poll", "--once"],
        env={**os.environ, "BENCH_IMAP_PASSWORD": password},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


# ----------------------------------------------------------------- one provider process


def provider(n: int, url: str, think: float, stop: Any, out: Any, seed: int) -> None:
    """Act until ``stop`` is set; put (me, [(kind, ms, outcome, ticket, at)]) on ``out``."""
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    from store.config import parse_settings
    from store.models import Ticket
    from store.services import ConflictError
    from store.workspace import open_workspace
    from tui.desk import Desk, Target

    rng = random.Random(seed)
    me = f"provider{n:02d}@corp.example"
    ws = open_workspace(parse_settings(config_text(url, None, me=me)), upgrade=False)
    desk = Desk(ws)
    records: list[tuple[str, float, str, int, float]] = []
    candidates: list[int] = []
    try:
        while not stop.is_set():
            kind = rng.choices(KINDS, WEIGHTS)[0]
            if len(candidates) < 5:
                with ws.db.session() as s:
                    stmt = select(Ticket.id).where(
                        Ticket.status.in_(["new", "open", "pending", "on-hold"])
                    )
                    candidates = list(s.scalars(stmt.order_by(Ticket.id.desc()).limit(400)))
                    rng.shuffle(candidates)
            if not candidates:
                continue
            tid = candidates.pop()
            with ws.db.session() as s:  # what the provider's screen shows right now
                row = s.execute(
                    select(Ticket.version, Ticket.status, Ticket.assignee_id).where(
                        Ticket.id == tid
                    )
                ).one()
            version, status, assignee = row[0], str(row[1].value), row[2]
            if kind == "claim" and assignee is not None:
                kind = "note"
            if kind == "status" and status not in NEXT_STATUS:
                kind = "note"
            draft = None
            if kind == "reply":  # the compose screen renders the draft before the send key
                draft = desk.compose(tid, None, {}, body=f"Reply {n}-{len(records)}.\n")
                draft = dataclasses.replace(draft, version=version)
            # The provider reads the ticket on screen, thinks, then acts on what they saw.
            if stop.wait(rng.uniform(0.5 * think, 1.5 * think)):
                break
            at = time.time()
            started = time.perf_counter()
            outcome = "done"
            try:
                if draft is not None:
                    desk.send_reply(draft)
                else:
                    value: Any = None
                    if kind == "status":
                        value = rng.choice(NEXT_STATUS[status])
                    elif kind == "note":
                        value = f"Note {n}-{len(records)}"
                    result = desk.apply(kind, [Target(tid, version)], value)
                    if result.conflicts:
                        outcome = "conflict"
                    elif result.errors:
                        outcome = "refused"
            except ConflictError:
                outcome = "conflict"
            except OperationalError as exc:
                outcome = "deadlock" if "deadlock" in str(exc).lower() else "error"
            records.append((kind, (time.perf_counter() - started) * 1000, outcome, tid, at))
    finally:
        out.put((me, records))
        ws.close()


# ----------------------------------------------------------------- one phase


def fresh_database(cluster: PostgresCluster, name: str, template: str) -> str:
    cluster.create_database(name, template=template)
    return cluster.url(name)


def deadlocks(cluster: PostgresCluster, name: str) -> int:
    import psycopg

    with psycopg.connect(cluster.url("postgres").replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def phase(
    cluster: PostgresCluster,
    dovecot: Dovecot,
    template: str,
    name: str,
    messages: list[bytes],
    providers: int,
    think: float,
    work: Path,
) -> dict[str, Any]:
    url = fresh_database(cluster, name, template)
    user, password = dovecot.take_user()
    seed_folder(dovecot, user, password, messages)
    config = work / f"{name}.toml"
    config.write_text(config_text(url, dovecot, user, me="poller@corp.example"))
    before = deadlocks(cluster, name)
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=provider, args=(n, url, think, stop, out, 1000 + n), daemon=True)
        for n in range(providers)
    ]
    for p in procs:
        p.start()
    if procs:
        time.sleep(5)  # every provider connected and acting before the import starts
    began = time.time()
    seconds = poll(config, password)
    ended = time.time()
    stop.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    found = {"seconds": seconds, "rate": len(messages) / seconds, "url": url}
    found["window"] = (began, ended)
    found["deadlocks"] = deadlocks(cluster, name) - before
    found["results"] = results
    return found


def lost_updates(url: str, results: list[tuple[str, list[Any]]]) -> int:
    """Done actions whose change is not in the log: each owns one version of its ticket."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    lost = 0
    with engine.connect() as conn:
        for me, records in results:
            done = sum(1 for r in records if r[2] == "done")
            owned = conn.execute(
                text(
                    "SELECT count(DISTINCT (e.ticket_id, e.version)) FROM events e "
                    "JOIN people p ON p.id = e.actor_id WHERE p.address = :me "
                    "AND e.kind <> 'viewed'"
                ),
                {"me": me},
            ).scalar_one()
            lost += max(done - int(owned), 0)
    engine.dispose()
    return lost


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 2) if ordered else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--providers", type=int, default=20)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--existing", type=int, default=2_000)
    ap.add_argument("--think", type=float, default=1.0)
    args = ap.parse_args()
    for reason in (postgres_unavailable_reason(), dovecot_unavailable_reason()):
        if reason:
            sys.exit(f"team bench: {reason}")

    with tempfile.TemporaryDirectory(prefix="deskq-team-") as tmp:
        work = Path(tmp)
        cluster = PostgresCluster.start(work / "pg")
        dovecot = Dovecot.start(work / "dovecot", users=6)
        try:
            # A template database with the existing tickets, copied for each phase.
            template = "team_template"
            cluster.create_database(template)
            user, password = dovecot.take_user()
            seed_folder(dovecot, user, password, corpus(args.existing, seed=7))
            config = work / "template.toml"
            config.write_text(config_text(cluster.url(template), dovecot, user))
            poll(config, password)
            mail = corpus(args.messages, seed=11)
            base = phase(cluster, dovecot, template, "team_base", mail, 0, args.think, work)
            team = phase(
                cluster, dovecot, template, "team_work", mail, args.providers, args.think, work
            )
            lost = lost_updates(team["url"], team["results"])
        finally:
            dovecot.stop()
            cluster.stop()

    # The figures are those of actions taken while the poller was importing.
    began, ended = team["window"]
    every = [r for _, recs in team["results"] for r in recs]
    records = [r for r in every if began <= r[4] <= ended]
    times = [r[1] for r in records if r[2] in ("done", "conflict", "refused")]
    per_kind = {
        kind: {
            "n": len(xs),
            "p50": pct(xs, 0.5),
            "p95": pct(xs, 0.95),
        }
        for kind in KINDS
        if (xs := [r[1] for r in records if r[0] == kind])
    }
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r[2]] = outcomes.get(r[2], 0) + 1
    out = {
        "benchmark": "team",
        "providers": args.providers,
        "messages": args.messages,
        "existing_tickets": args.existing,
        "think_s": args.think,
        "actions": len(records),
        "actions_whole_run": len(every),
        "actions_per_s": round(len(records) / team["seconds"], 1),
        "action_ms": {"p50": pct(times, 0.5), "p95": pct(times, 0.95), "by_kind": per_kind},
        "outcomes": outcomes,
        "ingest_msgs_per_s": {
            "baseline": round(base["rate"], 1),
            "with_providers": round(team["rate"], 1),
            "ratio": round(team["rate"] / base["rate"], 3),
        },
        "conflicts": outcomes.get("conflict", 0),
        "lost_updates": lost,  # over the whole run
        "deadlocks": team["deadlocks"] + outcomes.get("deadlock", 0),
        "targets": {"action_p95_ms": "< 50", "ingest_ratio": ">= 0.8", "lost": 0, "deadlocks": 0},
    }
    print(json.dumps(out))
    print(
        f"team bench: {args.providers} providers, {len(records)} actions "
        f"({out['actions_per_s']}/s) while ingesting {args.messages}\n"
        f"  action p50 {out['action_ms']['p50']} ms, p95 {out['action_ms']['p95']} ms\n"
        f"  ingest {out['ingest_msgs_per_s']['baseline']} msg/s alone, "
        f"{out['ingest_msgs_per_s']['with_providers']} with providers "
        f"(ratio {out['ingest_msgs_per_s']['ratio']})\n"
        f"  conflicts {out['conflicts']}, lost updates {lost}, deadlocks {out['deadlocks']}\n"
        f"  per kind: {json.dumps(per_kind)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
