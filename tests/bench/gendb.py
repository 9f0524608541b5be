"""Build a large, realistic deskq database quickly, for benchmarks of the read side.

Three years of IT, HR and Facilities tickets with their mail (indexed by the migration's
full-text triggers) and histories whose versions match the tickets: replies queued and then
sent, reopens, requesters' ratings; the same seed gives the same rows. A worker process
generates chunk n+1 while this one inserts chunk n (SQLAlchemy Core executemany, one
transaction per chunk). The worker formats values as the dialect stores them (checked
against the models' bind processors), so the big tables are bound untyped. No outbox rows
are written: a sent reply's outbox id is its message's id.

Last, every ticket's SLA clocks are computed from the event log under :data:`SETTINGS`
(``clocks_seconds``: what recomputing every clock after a policy change costs).

Usage: python tests/bench/gendb.py [URL] [--tickets N] [--seed S] [--progress]
Prints one JSON line; without URL it builds a temporary SQLite file and removes it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import formataddr
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import Connection, column, insert, make_url, table, text

from mail.demo_mail import QUEUES, REPLIES, REQUESTS
from store import clocks
from store.config import parse_settings
from store.db import Database
from store.models import Base, Person, Queue, QueueAlias


def _words(text: str) -> list[str]:
    return text.split()


END = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # a fixed "now" keeps builds reproducible
SPAN = 3 * 365 * 86400.0  # seconds of history; times are generated as seconds after START
START = END - timedelta(seconds=SPAN)
CHUNK = 5_000  # tickets per transaction: about 40,000 rows
KEYS = list(QUEUES)
BIG = ("tickets", "ticket_tags", "messages", "events")
FIRST = _words("""Amara Bjorn Chen Dolores Emeka Fatima Grace Hugo Ines Jonas Keiko Liam Mei
    Nadia Oskar Priya Rafael Sofia Tomas Zoë Ana Ben Carla David Elif Farid Greta Hannah Ivan
    Julia Kofi Lena Marco Nora Omar Paula Quentin Rosa Sven Yara""")
LAST = _words("""Okafor Lindqvist Wei Ruiz Nwosu Zahra Kim Martin Duarte Becker Tanaka O'Brien
    Lin Haddad Nowak Raman Souza Rossi Horvat Müller Smith Garcia Dubois Jensen Kowalski Novak
    Silva Yilmaz Costa Moreau Fischer Sato Patel Khan Andersen Ivanova Lopez Meyer Bauer Conti""")
PROVIDERS = ["Alex Provider", "Sam Whitfield", "Noor Asante", "Lucia Ferraro", "Per Holm"]
PROVIDERS += ["Ruth Adeyemi", "Kenji Mori", "Dana Ortiz"]
CATEGORIES = {
    "it": _words("Access Hardware Network Software Security"),
    "hr": _words("Payroll Leave Records Training"),
    "facilities": _words("Maintenance Furniture Parking Events Moves"),
}
TAGS = {
    "it": _words("vpn laptop printer password mfa outlook wifi vip phishing"),
    "hr": _words("payroll leave onboarding letters benefits vip"),
    "facilities": _words("heating furniture parking plumbing booking moves"),
}
# Details added to each request: {rare} is a word few messages share, {asset} nearly unique.
EXTRA = {
    "it": """The {app} client shows error {code} when I connect over the vpn.
    My password for {app} expired yesterday and the reset link does not arrive.
    The printer in room {room} prints blank pages since this morning.
    Asset tag {asset}, it is the {rare} workstation next to the window.
    This blocks the {rare} rollout, so please treat it quickly.
    I already rebooted twice and cleared the {app} cache.""",
    "hr": """My employee number is {asset} and I work in the {rare} team.
    The {app} portal shows a different figure than my contract.
    I sent the form to payroll on the {n}th but heard nothing back.
    My manager in the {rare} project already agreed to this.""",
    "facilities": """It is in room {room}, next to the {rare} meeting room.
    This is the {n}th time this month; the {app} booking shows nothing.
    Reported by the {rare} team on floor {n}.
    The badge reader at entrance {n} does not accept badge {asset} either.""",
}
DETAILS = {key: [line.strip() for line in text.splitlines()] for key, text in EXTRA.items()}
APPS = _words("SAP Teams Outlook Workday Jira Confluence Concur Zoom GlobalProtect Okta SharePoint")
SYLLABLES = _words("ka ri mo len dar vis tho quen bal zor ev ul pra sen tik gor fa nim ost wey")
WORDS = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES]  # 8,000 made-up
random.Random(0).shuffle(WORDS)
STATUSES = ("new", "open", "pending", "on-hold", "resolved", "closed")
# Final status weights by age: older than 30 days, older than 7 days, this week.
AGED = ((30, (0, 1, 1, 1, 27, 70)), (7, (5, 15, 10, 5, 45, 20)), (0, (30, 35, 15, 5, 15, 0)))
NULLABLE = _words("category assignee_id merged_into_id first_response_at resolved_at closed_at")
SQLITE_BUILD = ("foreign_keys = OFF", "synchronous = OFF", "journal_mode = OFF")
REOPENED, RATED = 0.04, 0.15  # shares of resolutions followed by a reopen, by a rating
RATINGS = (3, 4, 10, 30, 53)  # weights of 1 to 5 stars
COMMENTS = {
    1: ("Nobody answered for days.", "Still not fixed properly.", ""),
    2: ("I had to ask twice.", "Slow, but it works now.", ""),
    3: ("Took a while.", "OK.", ""),
    4: ("Works now, thanks.", "Thanks for the help!", "", ""),
    5: ("Super quick, thank you!", "Great help, much appreciated.", "Perfect.", "", ""),
}
BACK = ("Sorry, the problem is back since this morning.", "It happens again, same as before.")
FORMAT = 2  # of the generated data: bump when it changes, so cached builds are redone
# The calendar and SLA rules the clocks are built with; benchmarks open workspaces with
# the same ones (a different fingerprint would recompute every clock on opening).
SETTINGS = """
[calendar]
timezone = "Europe/Berlin"
hours = ["mon-fri 08:00-18:00"]
country = "DE"

[[sla]]
first_response = "4h"
resolution = "3d"

[[sla]]
priority = "urgent"
first_response = "1h"
resolution = "1d"
"""


def _dt_formatter(dialect: str) -> Any:
    """Seconds after START as the value the dialect stores (UTCDateTime's bind result)."""
    if dialect == "sqlite":
        naive = START.replace(tzinfo=None)
        return lambda s: (
            None if s is None else (naive + timedelta(seconds=s)).isoformat(" ", "microseconds")
        )
    return lambda s: None if s is None else START + timedelta(seconds=s)


@lru_cache(maxsize=4)
def _people(seed: int, requesters: int) -> list[tuple[str, str]]:
    """(display name, address) of every person: the providers first, then the requesters."""
    out = [(name, name.lower().replace(" ", ".") + "@corp.example") for name in PROVIDERS]
    pairs = [(f"{first} {last}", f"{first}.{last}") for first in FIRST for last in LAST]
    random.Random(f"{seed}:people").shuffle(pairs)
    for i in range(requesters):
        name, local = pairs[i % len(pairs)]
        local = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode().lower()
        local = local.replace("'", "") + (str(i // len(pairs) + 1) if i >= len(pairs) else "")
        out.append((name, f"{local}@{'contractor' if i % 13 == 5 else 'corp'}.example"))
    return out


class _Gen:
    """One chunk being generated: its random source, the people and the rows so far."""

    def __init__(self, seed: int, chunk: int, people: list[tuple[str, str]]) -> None:
        self.rng = random.Random(f"{seed}:{chunk}")
        self.people = people
        self.named = [formataddr(p) for p in people]
        self.rows: dict[str, list[Any]] = {name: [] for name in BIG}

    def text(self, key: str, name: str) -> tuple[str, str]:
        """A request's subject and body: a known problem plus varied details."""
        rng = self.rng
        subject, body = rng.choice(REQUESTS[key])
        slots = {"app": rng.choice(APPS), "code": f"0x{rng.getrandbits(16):04X}"}
        slots |= {"room": f"{rng.randint(1, 6)}.{rng.randint(1, 40):02d}", "n": rng.randint(2, 28)}
        slots |= {"asset": f"WS{rng.randint(10000, 99999)}"}
        slots["rare"] = WORDS[int(len(WORDS) * rng.random() ** 3)]  # a few common, most rare
        details = " ".join(s.format(**slots) for s in rng.sample(DETAILS[key], 2))
        if key == "it" and rng.random() < 0.2:
            subject = f"{subject} ({slots['app']})"
        return subject, f"Hi,\n\n{body} {details}\n\nBest regards,\n{name}\n"


class _Ticket:
    """One ticket being generated: its row, its clock and its version."""

    def __init__(self, g: _Gen, tid: int, t0: float, requester: int) -> None:
        self.g, self.tid, self.t, self.version, self.updated = g, tid, t0, 1, t0
        self.requester, self.key = requester, g.rng.choices(KEYS, weights=(5, 3, 2))[0]
        self.row = dict.fromkeys(NULLABLE) | {"id": tid, "queue_id": KEYS.index(self.key) + 1}
        self.row |= {"requester_id": requester, "created_at": t0}
        self.row |= {"status": "new", "priority": "normal"}

    def wait(self, mean: float) -> None:
        """Let about ``mean`` seconds pass, never reaching END."""
        self.t += min(self.g.rng.expovariate(1 / mean), (SPAN - self.t) / 2)

    def soon(self, low: float, high: float) -> None:
        """Let ``low`` to ``high`` seconds pass, never reaching END."""
        self.t += min(self.g.rng.uniform(low, high), (SPAN - self.t) / 2)

    def event(self, kind: str, actor: int | None, data: dict[str, Any], bump: bool = True) -> None:
        """Append an event; ``bump`` starts a new version (once per action, as services do)."""
        if bump:
            self.version, self.updated = self.version + 1, self.t
        self.g.rows["events"].append((self.t, self.tid, actor, kind, self.version, data))

    def message(self, direction: str, author: int, body: str, **extra: Any) -> dict[str, Any]:
        """Append a message row at the current time (it gets its id when the chunk ends)."""
        g, rng = self.g, self.g.rng
        row = {"ticket_id": self.tid, "direction": direction, "author_id": author}
        row |= {"in_reply_to": None, "references": None, "cc_addrs": "", "has_html": False}
        row |= {"date": self.t - rng.uniform(1, 90), "created_at": self.t, "text_body": body}
        row["message_id"] = f"<{rng.getrandbits(64):016x}@mail.corp.example>"
        row["from_addr"] = g.named[author - 1]
        row["has_html"] = rng.random() < 0.1
        g.rows["messages"].append(row | extra)
        return g.rows["messages"][-1]


def _second_message(tk: _Ticket, first: dict[str, Any], provider: int) -> None:
    """A provider's reply or a requester's follow-up, threaded on the first message."""
    tk.wait(86400)
    if tk.g.rng.random() < 0.6 and tk.row["status"] != "new":
        _reply(tk, first, provider)
    else:
        _follow_up(tk, first, tk.g.rng.choice(REPLIES))


def _reply(tk: _Ticket, first: dict[str, Any], provider: int) -> None:
    """A provider's reply: queued (its event), then delivered by the sender moments later."""
    g, rng, row = tk.g, tk.g.rng, tk.row
    name, address = g.people[tk.requester - 1]
    q_name, tag, q_addr, _ = QUEUES[tk.key]
    body = f"Hello {name.split()[0]},\n\n{rng.choice(REPLIES)}\n\n{q_name}\n"
    thread = {"in_reply_to": first["message_id"], "references": first["message_id"]}
    thread |= {"subject": f"[{tag} #{tk.tid}] Re: {row['subject']}", "threaded_by": "reply"}
    thread |= {"from_addr": formataddr((q_name, q_addr)), "to_addrs": g.named[tk.requester - 1]}
    m = tk.message("outbound", provider, body, **thread)
    tk.event("reply", provider, {"message": m, "to": address})
    tk.soon(2, 60)
    row["first_response_at"] = row["first_response_at"] or tk.t  # as the sender stamps it
    tk.event("sent", None, {"outbox": m, "kind": "reply"}, bump=False)


def _follow_up(tk: _Ticket, first: dict[str, Any], text: str) -> None:
    """The requester writes again on the thread of the first message."""
    name, address = tk.g.people[tk.requester - 1]
    how = f"In-Reply-To {first['message_id']}"
    thread = {"in_reply_to": first["message_id"], "references": first["message_id"]}
    thread |= {"subject": f"Re: {tk.row['subject']}", "threaded_by": how}
    body = f"Hi,\n\n{text}\n\n{name}\n"
    m = tk.message("inbound", tk.requester, body, to_addrs=first["to_addrs"], **thread)
    tk.event("message", None, {"message": m, "from": address, "threaded_by": how})


def _triage(tk: _Ticket, first: dict[str, Any], provider: int, status: str) -> None:
    """A provider takes the ticket up, sorts it, maybe answers, and moves it on."""
    g, rng, row = tk.g, tk.g.rng, tk.row
    tk.wait(4 * 3600)
    if rng.random() < 0.5:  # claim: one action, so one version for both events
        row["assignee_id"] = provider
        tk.event("assignment", provider, {"from": None, "to": g.people[provider - 1][1]})
        tk.event("status", provider, {"from": "new", "to": "open"}, bump=False)
    else:
        tk.event("status", provider, {"from": "new", "to": "open"})
    row["status"] = "open"
    if rng.random() < 0.2:
        row["priority"] = rng.choice(("low", "high", "high", "urgent"))
        tk.event("priority", provider, {"from": "normal", "to": row["priority"]})
    if rng.random() < 0.3:
        row["category"] = rng.choice(CATEGORIES[tk.key])
        tk.event("category", provider, {"from": None, "to": row["category"]})
    if rng.random() < 0.2:
        tags = sorted(rng.sample(TAGS[tk.key], rng.randint(1, 2)))
        g.rows["ticket_tags"] += [{"ticket_id": tk.tid, "tag": t} for t in tags]
        tk.event("tags", provider, {"added": tags, "removed": []})
    if rng.random() < 0.2:
        _second_message(tk, first, provider)
    _finish(tk, first, provider, status)


def _finish(tk: _Ticket, first: dict[str, Any], provider: int, status: str) -> None:
    """Move the ticket from open to its final status, stamping resolved/closed times."""
    row, closing = tk.row, status == "closed"
    if status in ("pending", "on-hold", "resolved") or (closing and tk.g.rng.random() < 0.5):
        _move(tk, provider, "resolved" if closing else status)
        if row["status"] == "resolved":
            _feedback(tk, first, provider)
    if closing:
        tk.wait(3 * 86400)
        tk.event("status", provider, {"from": row["status"], "to": "closed"})
        row["status"], row["closed_at"] = "closed", tk.t
        row["resolved_at"] = row["resolved_at"] or tk.t


def _move(tk: _Ticket, provider: int, to: str) -> None:
    """The provider moves the open ticket on, a while later."""
    tk.wait(2 * 86400)
    tk.event("status", provider, {"from": tk.row["status"], "to": to})
    tk.row["status"], tk.row["resolved_at"] = to, tk.t if to == "resolved" else None


def _feedback(tk: _Ticket, first: dict[str, Any], provider: int) -> None:
    """After a resolution the requester may write that the problem is back, or rate it.

    As ingestion records them: a reply reopens the ticket (one version for the message
    and the status); a rating is an event of its own and leaves the ticket resolved.
    """
    rng = tk.g.rng
    if rng.random() < REOPENED:
        tk.wait(86400)
        _follow_up(tk, first, rng.choice(BACK))
        data = {"from": "resolved", "to": "open", "reason": "reply after resolution"}
        tk.event("status", None, data, bump=False)
        tk.row["status"] = "open"
        _move(tk, provider, "resolved")
    if rng.random() < RATED:
        tk.wait(86400)
        rating = rng.choices(range(1, 6), RATINGS)[0]
        comment = rng.choice(COMMENTS[rating])
        tk.event("rating", None, {"rating": rating, "comment": comment}, bump=False)


def _ticket(g: _Gen, tid: int, t0: float, requesters: int) -> None:
    """One ticket: the mail that opened it, then what the providers did with it."""
    rng = g.rng
    requester = len(PROVIDERS) + 1 + int(requesters * rng.random() ** 1.5)  # some write a lot
    tk = _Ticket(g, tid, t0, requester)
    name, address = g.people[requester - 1]
    subject, body = g.text(tk.key, name)
    tk.row["subject"] = subject
    to = rng.choice([QUEUES[tk.key][2], *QUEUES[tk.key][3]])
    first = tk.message("inbound", requester, body, subject=subject, to_addrs=to)
    first["threaded_by"] = "new ticket"
    data = {"queue": tk.key, "status": "new", "priority": "normal", "requester": address}
    tk.event("created", None, data | {"mailbox": "helpdesk"}, bump=False)  # as ingestion does
    data = {"message": first, "from": address, "threaded_by": "new ticket"}
    tk.event("message", None, data, bump=False)
    weights = next(w for days, w in AGED if SPAN - t0 >= days * 86400)
    status, provider = rng.choices(STATUSES, weights)[0], rng.randint(1, len(PROVIDERS))
    if status != "new":
        _triage(tk, first, provider, status)
    elif rng.random() < 0.2:
        _second_message(tk, first, provider)
    g.rows["tickets"].append(tk.row | {"updated_at": tk.updated, "version": tk.version})


def _bindable(rows: dict[str, list[Any]], dt: Any, msg0: int, ev0: int) -> dict[str, list[Any]]:
    """Ids in time order within the chunk, and every value as the dialect stores it."""
    messages = sorted(rows["messages"], key=lambda m: m["created_at"])
    for i, m in enumerate(messages, msg0):
        m |= {"id": i, "date": dt(m["date"]), "created_at": dt(m["created_at"])}
    events, order = [], sorted(rows["events"], key=lambda e: e[0])
    for i, (at, tid, actor, kind, version, data) in enumerate(order, ev0):
        if "message" in data or "outbox" in data:  # a message's row: its id is known now
            data = data | {k: data[k]["id"] for k in ("message", "outbox") if k in data}
        row = {"id": i, "ticket_id": tid, "at": dt(at), "actor_id": actor, "kind": kind}
        events.append(row | {"version": version, "data": json.dumps(data)})
    for t in rows["tickets"]:
        for key in ("created_at", "updated_at", "first_response_at", "resolved_at", "closed_at"):
            t[key] = dt(t[key])
    return rows | {"messages": messages, "events": events}


def _chunk(
    seed: int, dialect: str, requesters: int, total: int, lo: int, hi: int, msg0: int, ev0: int
) -> dict[str, list[Any]]:
    """Tickets ``lo`` to ``hi - 1`` with everything they own, ready to insert (worker side)."""
    g = _Gen(seed, lo // CHUNK, _people(seed, requesters))
    for tid in range(lo, hi):
        _ticket(g, tid, SPAN * (tid - 1 + g.rng.random()) / total, requesters)
    return _bindable(g.rows, _dt_formatter(dialect), msg0, ev0)


def _small_tables(conn: Connection, seed: int, requesters: int) -> int:
    """Queues, their aliases (every address a queue receives at) and the people."""
    queues = [(i, k, *v) for i, (k, v) in enumerate(QUEUES.items(), 1)]
    rows = [{"id": q[0], "key": q[1], "name": q[2], "tag": q[3], "address": q[4]} for q in queues]
    conn.execute(insert(Queue), [row | {"created_at": START} for row in rows])
    aliases = [{"address": a, "queue_id": q[0]} for q in queues for a in (q[4], *q[5])]
    conn.execute(insert(QueueAlias), aliases)
    rng, people = random.Random(f"{seed}:joined"), _people(seed, requesters)
    rows = [
        {"id": i, "address": address, "display_name": name, "is_provider": i <= len(PROVIDERS)}
        | {"created_at": START - timedelta(days=rng.uniform(1, 900))}
        for i, (name, address) in enumerate(people, 1)
    ]
    conn.execute(insert(Person), rows)
    return len(rows)


def _load(conn: Connection, seed: int, total: int, people: int, progress: bool) -> dict[str, int]:
    """Insert the tickets chunk by chunk while a worker generates the next chunk."""
    tables = {n: table(n, *(column(c.name) for c in Base.metadata.tables[n].c)) for n in BIG}
    counts, ids, started = dict.fromkeys(BIG, 0), [1, 1], time.perf_counter()
    # fork, not spawn: spawn would re-run the caller's __main__ (scripts without a guard).
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        args = (seed, conn.dialect.name, people - len(PROVIDERS), total)
        future = pool.submit(_chunk, *args, 1, min(CHUNK, total) + 1, *ids)
        for lo in range(1, total + 1, CHUNK):
            rows = future.result()
            ids = [ids[0] + len(rows["messages"]), ids[1] + len(rows["events"])]
            if lo + CHUNK <= total:
                future = pool.submit(
                    _chunk, *args, lo + CHUNK, min(lo + 2 * CHUNK, total + 1), *ids
                )
            with conn.begin():
                for name in BIG:
                    if rows[name]:
                        conn.execute(insert(tables[name]), rows[name])
                    counts[name] += len(rows[name])
            if progress:
                done, seconds = min(lo + CHUNK - 1, total), time.perf_counter() - started
                print(f"{done}/{total} tickets, {seconds:.0f}s", file=sys.stderr)
    return counts


def _pragmas(conn: Connection, pragmas: tuple[str, ...]) -> list[Any]:
    # On the sqlite3 connection itself: these may not run inside a transaction.
    raw: Any = conn.connection.driver_connection
    return [raw.execute(f"PRAGMA {p}").fetchone() for p in pragmas]


def _check_format(conn: Connection) -> None:
    """Refuse to build if the models no longer store times the way the worker writes them."""
    kind = Base.metadata.tables["events"].c.at.type
    bind = kind.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    sample = START + timedelta(seconds=1.5)
    if bind(sample) != _dt_formatter(conn.dialect.name)(1.5):
        raise RuntimeError(f"gendb writes {sample} unlike the models: update _dt_formatter")


def _finalise(conn: Connection) -> None:
    """SQLite back to WAL; PostgreSQL sequences past the explicit ids, and statistics."""
    if conn.dialect.name == "sqlite":
        if _pragmas(conn, ("journal_mode = WAL",)) != [("wal",)]:
            raise RuntimeError("could not switch the database back to WAL")
        return
    with conn.begin():
        for name in ("queues", "people", "tickets", "messages", "events"):
            sequence = f"pg_get_serial_sequence('{name}', 'id')"
            conn.execute(text(f"SELECT setval({sequence}, max(id)) FROM {name}"))
        conn.exec_driver_sql("ANALYZE")


def keeper() -> clocks.Keeper:
    """The calendar and SLA rules (:data:`SETTINGS`) of the generated clocks."""
    return clocks.Keeper.from_settings(parse_settings(SETTINGS, "gendb.SETTINGS"))


def _rebuild_clocks(db: Database, progress: bool) -> tuple[int, float]:
    """Compute every ticket's clocks as a policy change would: (tickets, seconds)."""
    db.engine.dispose()  # fresh connections: the app's pragmas, not the build's

    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        seconds = time.perf_counter() - started
        print(f"clocks: {done}/{total} tickets, {seconds:.0f}s", file=sys.stderr)

    done = clocks.ensure(db._write, keeper(), report if progress else None)
    seconds = time.perf_counter() - started
    if not db.is_sqlite:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE ticket_clocks")
    return done, seconds


def build(url: str, tickets: int, *, seed: int = 7, progress: bool = False) -> dict[str, Any]:
    """Create a realistic deskq database with ``tickets`` tickets at ``url`` (must be empty).

    The schema is migrated to head first. Returns the rows written per table, the time
    to write them (``seconds``) and the time to compute every ticket's SLA clocks after
    that (``clocks_seconds``). ``progress`` reports each chunk on stderr.
    """
    started = time.perf_counter()
    db = Database.open(url)
    try:
        with db.engine.connect() as conn:
            if conn.scalar(text("SELECT count(*) FROM people")):
                raise ValueError(f"{url} already holds data: gendb needs an empty database")
            _check_format(conn)
            conn.commit()
            if db.is_sqlite:  # fast and unsafe while building; WAL again at the end
                _pragmas(conn, SQLITE_BUILD)
            with conn.begin():
                people = _small_tables(conn, seed, max(200, tickets // 50))
            counts = _load(conn, seed, tickets, people, progress)
            _finalise(conn)
        seconds = time.perf_counter() - started
        counts["ticket_clocks"], clock_seconds = _rebuild_clocks(db, progress)
    finally:
        db.close()
    counts |= {"queues": len(QUEUES), "people": people}
    return counts | {"seconds": round(seconds, 2), "clocks_seconds": round(clock_seconds, 2)}


def cached(tickets: int, cache: Path, *, progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """A SQLite database of ``tickets`` tickets under ``cache``, built once, and its figures.

    A build of an older :data:`FORMAT` (or one that did not finish) is built again.
    """
    path = cache / f"gendb-{tickets}.db"
    done = path.with_suffix(".done")
    figures = json.loads(done.read_text()) if done.exists() else {}
    if figures.get("format") != FORMAT:
        done.unlink(missing_ok=True)
        for stale in cache.glob(f"{path.name}*"):
            stale.unlink()
        cache.mkdir(parents=True, exist_ok=True)
        figures = build(f"sqlite:///{path}", tickets, progress=progress) | {"format": FORMAT}
        done.write_text(json.dumps(figures))
    return path, figures


def main() -> None:
    """The command line: build, print one JSON line (file size included for SQLite)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="an empty database (default: temporary SQLite)")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--progress", action="store_true", help="report each chunk on stderr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gendb-") as tmp:
        url = args.url or f"sqlite:///{tmp}/deskq.db"
        result = build(url, args.tickets, seed=args.seed, progress=args.progress)
        path = Path(make_url(url).database or "")
        if url.startswith("sqlite") and path.is_file():
            result["bytes"] = path.stat().st_size
        print(json.dumps({"benchmark": "gendb", "url": url, **result}))


if __name__ == "__main__":
    main()
