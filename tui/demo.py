"""``deskq demo``: a throwaway workspace with SQLite and a bundled demo mailbox.

The demo mail is delivered into a local Maildir and ingested through the real poller
path, exactly as a team's own mail would be. Outgoing mail goes to an outbox folder.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail.demo_mail import QUEUES, generate
from store import services
from store.models import Person, Priority, Status, Ticket
from store.services import get_or_create_person
from store.workspace import Workspace
from tui.starter import toml_string

DEMO_ME = "alex.provider@corp.example"


def demo_config(root: Path) -> str:
    """The demo workspace's config text."""
    queues = "".join(
        f'\n[[queue]]\nkey = "{key}"\nname = "{name}"\ntag = "{tag}"\naddress = "{address}"\n'
        f"aliases = [{', '.join(chr(34) + a + chr(34) for a in aliases)}]\n"
        for key, (name, tag, address, aliases) in QUEUES.items()
    )
    db = toml_string(str(root / "deskq.db"))
    maildir = toml_string(str(root / "Maildir"))
    outbox = toml_string(str(root / "outbox"))
    return (
        "# deskq demo workspace: throwaway, safe to delete.\n"
        f'me = "{DEMO_ME}"\nname = "Alex Provider"\n\n[database]\nurl = "sqlite:///{db}"\n\n'
        f'[[mailbox]]\nname = "demo"\nsource = "maildir"\npath = "{maildir}"\n'
        'default_queue = "it"\npoll_interval = 5\n'
        f"\n# Replies are written as .eml files here instead of being sent.\n"
        f'[sending]\nmethod = "folder"\nfolder = "{outbox}"\n' + queues
    )


def create(root: Path, count: int = 200) -> Path:
    """Write the workspace (config, Maildir with the demo mail); returns the config path."""
    maildir = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for index, mail in enumerate(generate(count, now=datetime.now(UTC))):
        path = maildir / "new" / f"{int(mail.date.timestamp())}.{index:04d}.demo"
        path.write_bytes(mail.raw)
        stamp = mail.date.timestamp()
        os.utime(path, (stamp, stamp))
    config = root / "config.toml"
    config.write_text(demo_config(root), encoding="utf-8")
    return config


DEMO_PROVIDERS = (
    (DEMO_ME, "Alex Provider"),
    ("sam.provider@corp.example", "Sam Provider"),
    ("kim.provider@corp.example", "Kim Provider"),
)
CATEGORIES = {
    "it": ("network", "hardware", "accounts", "software"),
    "hr": ("payroll", "leave", "onboarding", "benefits"),
    "facilities": ("building", "desks", "cleaning", "parking"),
}


def seed_activity(ws: Workspace) -> None:
    """Triage a realistic share of the demo tickets through the real services.

    Deterministic: some claimed by one of three providers, some waiting or resolved,
    priorities and categories set, a few notes and links, the older ones read by me.
    Each action is stamped minutes to days after the ticket arrived (never in the
    future), so SLA clocks and reports show a plausible history; some resolved
    tickets carry the requester's rating, as a rating reply would record it.
    """
    from store.pages import mark_read

    with ws.db.write() as s:
        people = [get_or_create_person(s, a, n, provider=True) for a, n in DEMO_PROVIDERS]
        tickets = s.scalars(select(Ticket).order_by(Ticket.id)).all()
        plan = [(t.id, t.queue.key, t.created_at) for t in tickets if t.merged_into_id is None]
    rng = random.Random(42)
    now = datetime.now(UTC)
    for index, (tid, queue, created) in enumerate(plan):
        clock = _DemoClock(created, now, random.Random(tid))  # the plan's rng stays as it was
        with ws.db.write() as s:
            _triage_one(s, tid, queue, index, len(plan), people, rng, clock)
            if index < len(plan) * 0.6:
                mark_read(s, people[0].id, tid, services.current_version(s, tid))


class _DemoClock:
    """Times for one ticket's actions: each a while after the last, at most now."""

    def __init__(self, start: datetime, now: datetime, rng: random.Random) -> None:
        self.at, self.now, self.rng = start, now, rng

    def next(self, mean_hours: float) -> datetime:
        wait = timedelta(hours=self.rng.expovariate(1 / mean_hours))
        self.at = min(self.at + wait, self.now - timedelta(seconds=1))
        return self.at


def _triage_one(
    s: Session,
    tid: int,
    queue: str,
    index: int,
    total: int,
    people: list[Person],
    rng: random.Random,
    clock: _DemoClock,
) -> None:
    _me, *_others = people
    provider = [s.merge(p) for p in people][rng.randrange(3)]
    version = services.current_version(s, tid)

    def step(fn: Any, *args: Any, wait: float = 0.5) -> None:
        nonlocal version
        with services.acting_at(clock.next(wait)):
            fn(s, tid, version, provider, *args)
            s.flush()
        version = services.current_version(s, tid)

    old = index < total * 0.45
    if rng.random() < 0.25:
        step(
            services.set_priority,
            rng.choice([Priority.HIGH, Priority.HIGH, Priority.URGENT, Priority.LOW]),
        )
    if rng.random() < 0.6:
        step(services.set_category, rng.choice(CATEGORIES.get(queue, ("general",))))
    if old or rng.random() < 0.5:
        step(services.claim, wait=3)
        if rng.random() < 0.2:
            step(services.add_note, rng.choice(NOTES))
        if old:
            done = Status.RESOLVED if rng.random() < 0.8 else Status.CLOSED
            step(services.set_status, done, wait=30)
            if clock.rng.random() < 0.4:
                ticket = s.get(Ticket, tid)
                assert ticket is not None
                rating = clock.rng.choice((5, 5, 5, 4, 4, 3, 2))
                services.record_event(
                    s, ticket, "rating", None, {"rating": rating, "comment": ""}, clock.next(20)
                )
        else:
            step(
                services.set_status,
                rng.choice([Status.OPEN, Status.OPEN, Status.PENDING, Status.ON_HOLD]),
            )
    if rng.random() < 0.08:
        step(
            services.set_tags,
            rng.sample(["remote", "vip", "recurring", "hardware-swap", "needs-approval"], 2),
        )


NOTES = (
    "Called them, will follow up tomorrow.",
    "Waiting for the vendor's answer (case 88123).",
    "Same as last month; see the runbook page.",
    "Needs manager approval first.",
)
