"""The queue's filter language and its pages, on SQLite and on PostgreSQL.

A world of ~40 tickets is built through the triage services; every filter is checked
against what Python computes from the data it created, and keyset pagination is walked
in every sort order (hypothesis picks order, direction, page size and filter).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from store import pages, services
from store.clocks import FAR
from store.config import parse_settings
from store.db import Database
from store.models import (
    Direction,
    Event,
    Message,
    Person,
    Priority,
    Queue,
    SavedView,
    Status,
    Ticket,
    TicketClock,
    TicketFlag,
    TicketRead,
    utcnow,
)
from store.query import (
    FILTER_KEYS,
    IS_KINDS,
    SORT_KEYS,
    Query,
    QueryError,
    Term,
    conditions,
    parse_query,
)
from store.workspace import sync_queues

CONFIG = """
me = "alice@corp.example"
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
[[queue]]
key = "hr"
name = "HR"
tag = "HR"
address = "hr@corp.example"
[[queue]]
key = "fac"
name = "Facilities"
tag = "FAC"
address = "facilities@corp.example"
"""

ME = "alice@corp.example"
CAROL = "carol@corp.example"
DAVE = "dave@corp.example"
# address -> display name ("" falls back to the address when sorting)
PROVIDERS = {ME: "Alice Admin", CAROL: "Carol", DAVE: ""}
REQUESTERS = {
    "bob@corp.example": "Bob",
    "bob@home.example": "bob",  # the same sort value as Bob: a tie across people
    "erin@corp.example": "",
    "x_y@corp.example": "Xavier Young",
    "zoe@corp.example": "ZOE",
}
NAMES = {**PROVIDERS, **REQUESTERS}
SUBJECTS = ["VPN down", "vpn DOWN", "Printer jam", "Password reset", "access request"]
VOCABULARY = ["vpn", "token", "printer", "jam", "password", "reset", "laptop", "screen"]
# minutes ago; none near the age: thresholds tested below, repeated values make ties
AGES = [10, 50, 100, 150, 300, 1800, 2910, 5760, 14400]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@dataclass
class Spec:
    """What a ticket was made to be: the expected answers are computed from these."""

    queue: str
    requester: str
    subject: str
    created: datetime
    prio: Priority = Priority.NORMAL
    status: Status = Status.NEW
    assignee: str | None = None
    tags: set[str] = field(default_factory=set)
    category: str | None = None
    messages: list[set[str]] = field(default_factory=list)
    quarantined: bool = False
    merged: bool = False
    read_mark: int | None = None
    id: int = 0
    version: int = 1
    updated: datetime | None = None
    due: float | None = None  # its ticket_clocks row's due time (None: no running target)

    @property
    def unread(self) -> bool:
        return self.read_mark is None or self.read_mark < self.version

    def has_words(self, text: str) -> bool:
        wanted = _words(text)
        return any(wanted <= m for m in self.messages)


@dataclass
class World:
    db: Database
    now: datetime
    me_id: int
    people: dict[str, int]
    specs: dict[int, Spec]

    def expected(self, pred: Callable[[Spec], bool]) -> set[int]:
        return {tid for tid, s in self.specs.items() if pred(s)}


def _person(s: Any, address: str) -> Person:
    return services.get_or_create_person(s, address, NAMES.get(address, ""))


def _make(
    s: Any, spec: Spec, rng: random.Random, bodies: list[str], people: dict[str, int]
) -> Ticket:
    """Create ``spec``'s ticket through the services, as a provider would."""
    queue = s.scalars(select(Queue).where(Queue.key == spec.queue)).one()
    requester = s.get_one(Person, people[spec.requester])
    alice, carol = s.get_one(Person, people[ME]), s.get_one(Person, people[CAROL])
    t = services.open_ticket(
        s, queue=queue, requester=requester, subject=spec.subject, at=spec.created
    )
    for i, body in enumerate(bodies):
        subject = spec.subject if i == 0 else f"Re: {spec.subject}"
        s.add(
            Message(
                ticket_id=t.id,
                direction=Direction.INBOUND,
                author_id=requester.id,
                from_addr=spec.requester,
                subject=subject,
                text_body=body,
                threaded_by="test",
            )
        )
        spec.messages.append(_words(subject) | _words(body))
    if spec.prio != Priority.NORMAL:
        t = services.set_priority(s, t.id, t.version, carol, spec.prio)
    if spec.assignee == ME and rng.random() < 0.5:
        t = services.claim(s, t.id, t.version, alice)
    elif spec.assignee:
        t = services.assign(s, t.id, t.version, carol, s.get_one(Person, people[spec.assignee]))
    if t.status != spec.status:
        t = services.set_status(s, t.id, t.version, carol, spec.status)
    if spec.category:
        t = services.set_category(s, t.id, t.version, alice, spec.category)
    if spec.tags:
        t = services.set_tags(s, t.id, t.version, alice, [x.upper() for x in spec.tags])
    if spec.quarantined:
        s.add(TicketFlag(ticket_id=t.id, flag="quarantined", detail="test"))
    spec.id = t.id
    return t


def build_world(db: Database, n: int = 40, seed: int = 20261124) -> World:
    rng = random.Random(seed)
    now = utcnow()
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        people = {a: _person(s, a).id for a in NAMES}
        for a in PROVIDERS:
            s.get_one(Person, people[a]).is_provider = True
    specs: dict[int, Spec] = {}
    for i in range(n):
        spec = Spec(
            queue=rng.choice(["it", "it", "hr", "fac"]),
            requester=rng.choice(list(REQUESTERS)),
            subject=rng.choice(SUBJECTS),
            created=now - timedelta(minutes=rng.choice(AGES)),
            prio=rng.choice(
                [Priority.LOW, Priority.NORMAL, Priority.NORMAL, Priority.HIGH, Priority.URGENT]
            ),
            status=rng.choice(list(Status)),
            assignee=rng.choice([None, None, ME, CAROL, DAVE]),
            tags=set(rng.sample(["vpn", "printer", "network", "vip"], rng.choice([0, 0, 1, 2]))),
            category=rng.choice([None, None, "Network", "hardware", "ACCESS"]),
            quarantined=i in (3, 17),
        )
        if i % 6 == 1:  # untouched since opened, all at once: ties on created and updated
            spec.created = now - timedelta(minutes=300)
            spec.prio, spec.status, spec.assignee = Priority.NORMAL, Status.NEW, None
            spec.tags, spec.category = set(), None
        bodies = [
            " ".join([*rng.sample(VOCABULARY, 3), f"marker{i}"])
            for _ in range(rng.choice([1, 1, 2]))
        ]
        with db.write() as s:
            t = _make(s, spec, rng, bodies, people)
            read = rng.choice(["none", "current", "stale"])
            if read == "current" or (read == "stale" and t.version > 1):
                spec.read_mark = t.version if read == "current" else t.version - 1
                pages.mark_read(s, people[ME], t.id, spec.read_mark)
        specs[spec.id] = spec
    # a merged pair: the source's messages and tags move to the target
    src = Spec("it", "bob@corp.example", "Merge me", now - timedelta(minutes=50), tags={"vip"})
    dst = Spec("it", "zoe@corp.example", "Keep me", now - timedelta(minutes=50))
    with db.write() as s:
        v_src = _make(s, src, rng, ["alpha vpn token"], people).version
        v_dst = _make(s, dst, rng, ["beta"], people).version
        services.merge(s, src.id, v_src, dst.id, v_dst, s.get_one(Person, people[ME]))
    src.status, src.merged = Status.CLOSED, True
    dst.messages += src.messages
    src.messages = []
    dst.tags |= src.tags
    specs[src.id], specs[dst.id] = src, dst
    # bookkeeping the services decide: current versions and update times
    with db.session() as s:
        for tid, version, updated in s.execute(
            select(Ticket.id, Ticket.version, Ticket.updated_at)
        ):
            specs[tid].version, specs[tid].updated = version, updated
    # SLA due times (ties, some missing, some past) as the clock cache would hold them.
    past, soon = time.time() - 3600, time.time() + 3600
    with db.write() as s:
        for spec in specs.values():
            spec.due = rng.choice([None, past, soon, soon, soon + 60])
            s.add(
                TicketClock(
                    ticket_id=spec.id,
                    last_event_id=0,
                    state={},
                    queue_id=1,
                    priority="normal",
                    status="open",
                    created=0.0,
                    due=spec.due,
                    waiting=0.0,
                    reopens=0,
                )
            )
    return World(db, now, people[ME], people, specs)


def _ids(world: World, text: str, now: datetime | None = None) -> list[int]:
    with world.db.session() as s:
        q = parse_query(text)
        stmt = select(Ticket.id).where(*conditions(s, q, world.me_id, now or world.now))
        return sorted(s.scalars(stmt))


# ------------------------------------------------------------------ parsing


def test_parse_every_key() -> None:
    q = parse_query(
        "status:open prio:>=high assignee:me queue:it from:bob tag:vpn category:none "
        "is:unread age:<2h id:12 #15 printer"
    )
    assert q.terms == (
        Term("status", ("open",)),
        Term("prio", (">=high",)),
        Term("assignee", ("me",)),
        Term("queue", ("it",)),
        Term("from", ("bob",)),
        Term("tag", ("vpn",)),
        Term("category", ("none",)),
        Term("is", ("unread",)),
        Term("age", ("<2h",)),
        Term("id", ("12",)),
        Term("id", ("15",)),
    )
    assert q.words == "printer"
    assert (q.sort, q.descending) == ("id", True)
    assert q.uses_me


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("STATUS:Open,PENDING", Term("status", ("open", "pending"))),
        ("status:on-hold", Term("status", ("on-hold",))),
        ("priority:URGENT", Term("prio", ("urgent",))),
        ("prio:>High", Term("prio", (">high",))),
        ("prio:<=normal", Term("prio", ("<=normal",))),
        ("prio:low,urgent", Term("prio", ("low", "urgent"))),
        ("to:none", Term("assignee", ("none",))),
        ("assignee:carol", Term("assignee", ("carol",))),
        ("requester:Bob", Term("from", ("Bob",))),
        ("cat:Network", Term("category", ("Network",))),
        ("-tag:spam", Term("tag", ("spam",), negated=True)),
        ("-status:new,open", Term("status", ("new", "open"), negated=True)),
        ("is:ACTIVE,waiting", Term("is", ("active", "waiting"))),
        ("age:>3d", Term("age", (">3d",))),
        ("age:<30m,>1w", Term("age", ("<30m", ">1w"))),
        ("id:12,#15", Term("id", ("12", "15"))),
        ("#7", Term("id", ("7",))),
        ('from:"Xavier Young"', Term("from", ("Xavier Young",))),
        ('"from:Xavier Young"', Term("from", ("Xavier Young",))),
        ("queue:IT", Term("queue", ("IT",))),
    ],
)
def test_parse_terms(text: str, term: Term) -> None:
    q = parse_query(text)
    assert q.terms == (term,) and q.words == ""
    assert q.text == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("vpn token", "vpn token"),
        ('"vpn token" printer', "vpn token printer"),
        ("status:open vpn -x", "vpn -x"),
        ("10:30 -#5 #abc", "10:30 -#5 #abc"),  # a key is letters only; "#" needs digits
        ("", ""),
    ],
)
def test_parse_free_words(text: str, words: str) -> None:
    assert parse_query(text).words == words


@pytest.mark.parametrize(
    ("value", "sort", "descending"),
    [
        ("id", "id", True),
        ("-id", "id", False),
        ("age", "created", True),
        ("-age", "created", False),
        ("created", "created", True),
        ("updated", "updated", True),
        ("-updated", "updated", False),
        ("prio", "prio", True),
        ("priority", "prio", True),
        ("-prio", "prio", False),
        ("status", "status", False),
        ("-status", "status", True),
        ("queue", "queue", False),
        ("requester", "requester", False),
        ("from", "requester", False),
        ("-from", "requester", True),
        ("assignee", "assignee", False),
        ("-assignee", "assignee", True),
        ("subject", "subject", False),
        ("SUBJECT", "subject", False),
    ],
)
def test_sort_natural_orders(value: str, sort: str, descending: bool) -> None:
    q = parse_query(f"status:open sort:{value}")
    assert (q.sort, q.descending) == (sort, descending)
    assert q.terms == (Term("status", ("open",)),)
    assert set(SORT_KEYS) >= {q.sort}


def test_last_sort_wins() -> None:
    q = parse_query("sort:prio vpn sort:-subject")
    assert (q.sort, q.descending, q.words) == ("subject", True, "vpn")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stauts:open", r"unknown filter stauts: \(did you mean status\?\); filters are status:, "),
        ("tga:vpn", r"did you mean tag\?"),
        ("colour:red", r"^unknown filter colour:; filters are"),
        ("status:opne", r"status:opne is not a status \(did you mean open\?\); use new, open"),
        ("status:done", r"status:done is not a status"),
        ("status:", r"status: needs a value"),
        ("tag:vpn,", r"tag: needs a value"),
        ('from:"bob', r"double quote is not closed"),
        ('vpn "token', r"double quote is not closed"),
        ("age:2h", r"age:2h is not understood; use how long ago"),
        ("age:<2y", r"age:<2y is not understood"),
        ("age:<h", r"age:<h is not understood"),
        ("age:<1.5h", r"age:<1.5h is not understood"),
        ("sort:colour", r"sort:colour is not a column; use id, age"),
        ("sort:prioity", r"sort:prioity is not a column \(did you mean prio\?\)"),
        ("sort:", r"sort: is not a column"),
        ("prio:hihg", r"prio:hihg is not a priority; use low, normal"),
        ("is:unred", r"is:unred is not known \(did you mean unread\?\)"),
        ("id:abc", r"id:abc is not a ticket number"),
    ],
)
def test_parse_errors_say_how_to_fix(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)


def test_every_documented_key_parses() -> None:
    samples = {
        "status": "open",
        "prio": "high",
        "assignee": "me",
        "queue": "it",
        "from": "bob",
        "tag": "x",
        "category": "none",
        "is": "active",
        "age": "<1d",
        "id": "1",
        "sort": "-prio",
    }
    assert set(samples) == set(FILTER_KEYS)
    for kind in IS_KINDS:
        assert kind in FILTER_KEYS["is"]
        assert parse_query(f"is:{kind}").terms == (Term("is", (kind,)),)
    parse_query(" ".join(f"{k}:{v}" for k, v in samples.items()))


@pytest.mark.parametrize(
    "text", ["assignee:me", "to:me", "-assignee:me", "assignee:carol,me", "is:mine", "is:unread"]
)
def test_me_is_needed(text: str) -> None:
    q = parse_query(text)
    assert q.uses_me
    with pytest.raises(QueryError, match='needs me = "your address"'):
        conditions(None, q, None)  # type: ignore[arg-type]  # no words: no session used
    assert not parse_query("assignee:carol is:active").uses_me


def test_uses_me_is_case_insensitive_like_the_condition() -> None:
    q = parse_query("assignee:ME")
    with pytest.raises(QueryError):
        conditions(None, q, None)  # type: ignore[arg-type]  # no words: no session used
    assert q.uses_me


@pytest.mark.parametrize("text", ["prio:=high", "prio:=>high", "prio:<>normal"])
def test_prio_operators_parse_strictly(text: str) -> None:
    try:
        q = parse_query(text)
    except QueryError:
        return
    conditions(None, q, None)  # type: ignore[arg-type]  # no words: no session used


# ------------------------------------------------------------------ filters against data


def _filter_cases(w: World) -> list[tuple[str, Callable[[Spec], bool]]]:
    rank = list(Priority).index
    ids = sorted(w.specs)
    a, b = ids[0], ids[5]
    act = {Status.NEW, Status.OPEN, Status.PENDING, Status.ON_HOLD}
    wait = {Status.PENDING, Status.ON_HOLD}
    done = {Status.RESOLVED, Status.CLOSED}
    bobs = {"bob@corp.example", "bob@home.example"}

    def older(minutes: int) -> Callable[[Spec], bool]:
        return lambda s: s.created < w.now - timedelta(minutes=minutes)

    def newer(minutes: int) -> Callable[[Spec], bool]:
        return lambda s: s.created > w.now - timedelta(minutes=minutes)

    def cat(s: Spec) -> str | None:
        return s.category.lower() if s.category else None

    return [
        ("", lambda s: True),
        ("status:open", lambda s: s.status == Status.OPEN),
        ("status:new,open", lambda s: s.status in {Status.NEW, Status.OPEN}),
        ("status:ON-HOLD", lambda s: s.status == Status.ON_HOLD),
        ("-status:closed", lambda s: s.status != Status.CLOSED),
        ("-status:new,open", lambda s: s.status not in {Status.NEW, Status.OPEN}),
        ("prio:high", lambda s: s.prio == Priority.HIGH),
        ("prio:>=high", lambda s: rank(s.prio) >= 2),
        ("prio:>normal", lambda s: rank(s.prio) > 1),
        ("prio:<=normal", lambda s: rank(s.prio) <= 1),
        ("prio:<normal", lambda s: s.prio == Priority.LOW),
        ("priority:URGENT", lambda s: s.prio == Priority.URGENT),
        ("prio:>urgent", lambda s: False),
        ("prio:<low", lambda s: False),
        ("prio:low,urgent", lambda s: s.prio in {Priority.LOW, Priority.URGENT}),
        ("-prio:>=high", lambda s: rank(s.prio) < 2),
        ("assignee:me", lambda s: s.assignee == ME),
        ("to:me", lambda s: s.assignee == ME),
        ("assignee:none", lambda s: s.assignee is None),
        ("-assignee:none", lambda s: s.assignee is not None),
        ("assignee:me,none", lambda s: s.assignee in {ME, None}),
        ("assignee:carol", lambda s: s.assignee == CAROL),
        ("assignee:ADMIN", lambda s: s.assignee == ME),  # display name "Alice Admin"
        ("assignee:dave@", lambda s: s.assignee == DAVE),
        ("assignee:corp.example", lambda s: s.assignee is not None),
        ("assignee:_", lambda s: False),  # LIKE wildcards are escaped
        ("assignee:%", lambda s: False),
        ("queue:it", lambda s: s.queue == "it"),
        ("queue:HR", lambda s: s.queue == "hr"),
        ("queue:it,fac", lambda s: s.queue in {"it", "fac"}),
        ("-queue:it", lambda s: s.queue != "it"),
        ("queue:nosuch", lambda s: False),
        ("from:bob", lambda s: s.requester in bobs),
        ("from:BOB@CORP", lambda s: s.requester == "bob@corp.example"),
        ("requester:erin", lambda s: s.requester == "erin@corp.example"),
        ("from:young", lambda s: s.requester == "x_y@corp.example"),
        ('from:"xavier young"', lambda s: s.requester == "x_y@corp.example"),
        ("from:_", lambda s: s.requester == "x_y@corp.example"),
        ("from:%", lambda s: False),
        ("from:home.example", lambda s: s.requester == "bob@home.example"),
        ("-from:bob", lambda s: s.requester not in bobs),
        ("from:zoe,erin", lambda s: s.requester in {"zoe@corp.example", "erin@corp.example"}),
        ("tag:vpn", lambda s: "vpn" in s.tags),
        ("tag:VPN", lambda s: "vpn" in s.tags),
        ("-tag:vpn", lambda s: "vpn" not in s.tags),
        ("tag:vpn,printer", lambda s: bool({"vpn", "printer"} & s.tags)),
        ("tag:vpn tag:network", lambda s: {"vpn", "network"} <= s.tags),
        ("tag:vip", lambda s: "vip" in s.tags),
        ("category:network", lambda s: cat(s) == "network"),
        ("cat:Access", lambda s: cat(s) == "access"),
        ("cat:NONE", lambda s: s.category is None),
        ("-category:none", lambda s: s.category is not None),
        ("category:hardware,access", lambda s: cat(s) in {"hardware", "access"}),
        ("category:none,network", lambda s: cat(s) in {None, "network"}),
        ("is:active", lambda s: s.status in act),
        ("is:waiting", lambda s: s.status in wait),
        ("is:done", lambda s: s.status in done),
        ("-is:active", lambda s: s.status not in act),
        ("is:waiting,done", lambda s: s.status in wait | done),
        ("is:unassigned", lambda s: s.assignee is None),
        ("is:mine", lambda s: s.assignee == ME),
        ("is:unread", lambda s: s.unread),
        ("-is:unread", lambda s: not s.unread),
        ("is:quarantined", lambda s: s.quarantined),
        ("is:merged", lambda s: s.merged),
        ("is:breaching", lambda s: s.due is not None),
        ("is:breached", lambda s: s.due is not None and s.due <= time.time()),
        ("age:<2h", newer(120)),
        ("age:>3d", older(3 * 1440)),
        ("age:<1d", newer(1440)),
        ("age:>1w", older(7 * 1440)),
        ("age:<30m", newer(30)),
        ("age:>90m", older(90)),
        ("age:<2h,>1w", lambda s: newer(120)(s) or older(7 * 1440)(s)),
        ("-age:<2h", lambda s: not newer(120)(s)),
        (f"id:{a},{b}", lambda s: s.id in {a, b}),
        (f"#{b}", lambda s: s.id == b),
        (f"id:#{a}", lambda s: s.id == a),
        (f"-id:{a}", lambda s: s.id != a),
        ("id:999999", lambda s: False),
        ("vpn", lambda s: s.has_words("vpn")),
        ("VPN token", lambda s: s.has_words("vpn token")),
        ('"vpn token"', lambda s: s.has_words("vpn token")),
        ("down", lambda s: s.has_words("down")),
        ("marker7", lambda s: s.has_words("marker7")),
        ("alpha", lambda s: s.has_words("alpha")),  # moved by the merge
        ("nosuchword", lambda s: False),
        (
            "status:open,pending prio:>=high assignee:me",
            lambda s: (
                s.status in {Status.OPEN, Status.PENDING} and rank(s.prio) >= 2 and s.assignee == ME
            ),
        ),
        (
            "queue:it -tag:vpn is:active sort:-prio",
            lambda s: s.queue == "it" and "vpn" not in s.tags and s.status in act,
        ),
        ("from:bob printer", lambda s: s.requester in bobs and s.has_words("printer")),
        (
            "-is:done -assignee:none category:network",
            lambda s: s.status not in done and s.assignee is not None and cat(s) == "network",
        ),
        ("is:unread is:mine", lambda s: s.unread and s.assignee == ME),
    ]


def test_filters_return_exactly_the_expected_tickets(db: Database) -> None:
    w = build_world(db)
    assert len(w.specs) == 42
    wrong = []
    nonempty = 0
    for text, pred in _filter_cases(w):
        expected = sorted(w.expected(pred))
        nonempty += bool(expected) and len(expected) < len(w.specs)
        got = _ids(w, text)
        with db.session() as s:
            q = parse_query(text)
            paged = [r.ticket.id for r in pages.fetch_page(s, q, w.me_id, limit=1000)]
            n = pages.count(s, q, w.me_id)
        if got != expected or sorted(paged) != expected or n != len(expected):
            wrong.append(f"{text!r}: expected {expected}, got {got} paged {paged} count {n}")
    assert not wrong, "\n".join(wrong)
    # the data really exercises the filters (most select some but not all tickets)
    assert nonempty >= 60


def test_queue_rows_carry_summary_and_unread(db: Database) -> None:
    w = build_world(db, n=12)
    with db.session() as s:
        rows = pages.fetch_page(s, parse_query(""), w.me_id, limit=100)
        anonymous = pages.fetch_page(s, parse_query(""), None, limit=100)
    assert {r.ticket.id for r in rows} == set(w.specs)
    for r in rows:
        spec = w.specs[r.ticket.id]
        assert r.unread == spec.unread
        assert r.key == (r.ticket.id, r.ticket.id)
        assert r.ticket.queue == spec.queue and r.ticket.status == spec.status.value
        assert r.ticket.priority == spec.prio.value
        assert r.ticket.requester.address == spec.requester
        assert (r.ticket.assignee.address if r.ticket.assignee else None) == spec.assignee
        assert set(r.ticket.tags) == spec.tags and r.ticket.version == spec.version
        assert r.ticket.flags == (("quarantined",) if spec.quarantined else ())
    assert not any(r.unread for r in anonymous)


# ------------------------------------------------------------------ keyset pagination

SORT_TOKENS = [
    "id",
    "age",
    "created",
    "updated",
    "prio",
    "priority",
    "status",
    "queue",
    "requester",
    "from",
    "assignee",
    "subject",
    "left",
]
PAGED_FILTERS = ["", "is:active", "-tag:vpn", "is:unassigned", "queue:it", "vpn", "from:bob"]


def _sort_value(spec: Spec, sort: str) -> Any:
    def name(address: str) -> str:
        return (NAMES[address] or address).lower()

    if sort == "id":
        return spec.id
    if sort == "created":
        return spec.created
    if sort == "updated":
        return spec.updated
    if sort == "prio":
        return list(Priority).index(spec.prio)
    if sort == "status":
        return list(Status).index(spec.status)
    if sort == "queue":
        return spec.queue
    if sort == "requester":
        return name(spec.requester)
    if sort == "assignee":
        return name(spec.assignee) if spec.assignee else ""
    if sort == "left":
        return spec.due if spec.due is not None else FAR
    assert sort == "subject"
    return spec.subject.lower()


def _expected_order(w: World, q: Query, pred: Callable[[Spec], bool]) -> list[int]:
    chosen = [s for s in w.specs.values() if pred(s)]
    chosen.sort(key=lambda s: (_sort_value(s, q.sort), s.id), reverse=q.descending)
    return [s.id for s in chosen]


def _walk_forward(w: World, q: Query, k: int) -> list[int]:
    with w.db.session() as s:
        page = pages.fetch_page(s, q, w.me_id, limit=k)
        got: list[int] = []
        while page:
            assert len(page) <= k
            got += [r.ticket.id for r in page]
            page = pages.fetch_page(s, q, w.me_id, after=page[-1].key, limit=k)
    return got


def _walk_backward(w: World, q: Query, k: int) -> tuple[list[int], list[int]]:
    with w.db.session() as s:
        page = pages.fetch_last_page(s, q, w.me_id, limit=k)
        last = [r.ticket.id for r in page]
        got: list[int] = []
        while page:
            assert len(page) <= k
            got = [r.ticket.id for r in page] + got
            page = pages.fetch_page(s, q, w.me_id, before=page[0].key, limit=k)
    return got, last


def test_keyset_pages_walk_every_order(db: Database) -> None:
    w = build_world(db)
    preds = dict(_filter_cases(w))
    # ties everywhere: same created time, priority, status, queue, requester name
    for sort in SORT_KEYS:
        values = [_sort_value(s, sort) for s in w.specs.values()]
        assert len(set(values)) < len(values) or sort == "id"
    assert any(s.assignee is None for s in w.specs.values())

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        sort=st.sampled_from(SORT_TOKENS),
        reverse=st.booleans(),
        k=st.integers(1, 12),
        text=st.sampled_from(PAGED_FILTERS),
    )
    def walk(sort: str, reverse: bool, k: int, text: str) -> None:
        q = parse_query(f"{text} sort:{'-' if reverse else ''}{sort}")
        expected = _expected_order(w, q, preds[text])
        assert _walk_forward(w, q, k) == expected
        backward, last = _walk_backward(w, q, k)
        assert backward == expected
        assert last == expected[-k:]
        with db.session() as s:
            assert pages.count(s, q, w.me_id) == len(expected)

    walk()


def test_keyset_every_sort_key_both_directions_pages_of_three(db: Database) -> None:
    """Deterministic companion of the property: each sort key, both ways, pages of 3."""
    w = build_world(db, n=15, seed=3)
    for sort in SORT_KEYS:
        for reverse in (False, True):
            q = parse_query(f"sort:{'-' if reverse else ''}{sort}")
            expected = _expected_order(w, q, lambda s: True)
            assert _walk_forward(w, q, 3) == expected, (sort, reverse)
            assert _walk_backward(w, q, 3) == (expected, expected[-3:]), (sort, reverse)


def test_rows_by_id_none_when_no_longer_matching(db: Database) -> None:
    w = build_world(db, n=10)
    q = parse_query("is:active sort:prio")
    active = sorted(
        w.expected(lambda s: s.status in {Status.NEW, Status.OPEN, Status.PENDING, Status.ON_HOLD})
    )
    other = sorted(set(w.specs) - set(active))
    assert active and other
    with db.session() as s:
        first = {r.ticket.id: r for r in pages.fetch_page(s, q, w.me_id, limit=100)}
        got = pages.rows_by_id(s, q, w.me_id, [*active, *other, 999_999, active[0]])
    assert list(got) == sorted({*active, *other, 999_999})
    for tid in active:
        row = got[tid]
        assert row is not None and row.key == first[tid].key and row.unread == first[tid].unread
        assert row.ticket == first[tid].ticket
    assert all(got[tid] is None for tid in [*other, 999_999])
    # close one: it drops out of the view; the others are still there
    with db.write() as s:
        carol = s.get_one(Person, w.people[CAROL])
        services.set_status(s, active[0], w.specs[active[0]].version, carol, Status.CLOSED)
    with db.session() as s:
        again = pages.rows_by_id(s, q, w.me_id, active)
        big = pages.rows_by_id(s, q, w.me_id, range(1, 1201))  # more than one chunk of 500
    assert again[active[0]] is None
    assert all(again[t] is not None for t in active[1:])
    assert {t for t, r in big.items() if r is not None} == set(active[1:])
    assert len(big) == 1200
    with db.session() as s:
        assert pages.rows_by_id(s, q, w.me_id, []) == {}


# ------------------------------------------------------------------ change feed


def test_change_feed_sees_created_and_touched(db: Database) -> None:
    with db.session() as s:
        assert pages.change_cursor(s) == 0
        empty = pages.changes_since(s, 0)
    assert empty == pages.Changes(0, frozenset(), frozenset())
    w = build_world(db, n=5)
    ids = sorted(w.specs)
    with db.session() as s:
        cursor = pages.change_cursor(s)
        everything = pages.changes_since(s, 0)
        quiet = pages.changes_since(s, cursor)
    assert everything.cursor == cursor > 0 and not everything.truncated
    assert everything.created == set(ids) and everything.touched == set(ids)
    assert quiet == pages.Changes(cursor, frozenset(), frozenset())

    carol = w.people[CAROL]
    a, b, c = ids[0], ids[1], ids[2]
    with db.write() as s:
        services.set_category(s, a, w.specs[a].version, s.get_one(Person, carol), "feed-test")
    with db.write() as s:
        services.link(s, b, w.specs[b].version, s.get_one(Person, carol), c)
    with db.write() as s:
        queue = s.scalars(select(Queue).where(Queue.key == "hr")).one()
        bob = s.get_one(Person, w.people["bob@corp.example"])
        new = services.open_ticket(s, queue=queue, requester=bob, subject="new one").id
    with db.session() as s:
        changes = pages.changes_since(s, cursor)
        assert changes.cursor == pages.change_cursor(s) > cursor
    assert changes.touched == {a, b, c, new} and changes.created == {new}
    assert not changes.truncated

    # over the limit: truncated, and walking on from each cursor still sees everything
    seen: set[int] = set()
    created: set[int] = set()
    at, steps = 0, 0
    while True:
        with db.session() as s:
            part = pages.changes_since(s, at, limit=3)
        steps += 1
        assert part.truncated == (part.cursor < changes.cursor)
        if part.cursor == at:
            break
        seen |= part.touched
        created |= part.created
        at = part.cursor
    assert seen == {*ids, new} and created == {*ids, new}
    assert steps > 3
    with db.session() as s:
        first = pages.changes_since(s, 0, limit=1)
        first_event = int(s.scalar(select(func.min(Event.id))) or 0)
    assert first == pages.Changes(first_event, frozenset({ids[0]}), frozenset({ids[0]}), True)
    assert not first.gaps


@pytest.mark.postgres
def test_change_feed_sees_a_transaction_that_commits_late(pg_url: str) -> None:
    db = Database.open(pg_url)
    try:
        with db.write() as s:
            sync_queues(s, parse_settings(CONFIG))
            for a in ("bob@corp.example", "zoe@corp.example"):
                services.get_or_create_person(s, a)
        with db.session() as s:
            cursor = pages.change_cursor(s)

        def open_one(s: Any, address: str) -> int:
            queue = s.scalars(select(Queue).where(Queue.key == "it")).one()
            person = s.scalar(select(Person).where(Person.address == address))
            ticket = services.open_ticket(s, queue=queue, requester=person, subject=address)
            s.flush()  # as every service does before returning (change.flush())
            return ticket.id

        with db.write() as slow:
            late = open_one(slow, "bob@corp.example")  # takes the lower event id...
            with db.write() as fast:
                early = open_one(fast, "zoe@corp.example")
            with db.session() as s:  # ...a live queue ticks between the two commits
                tick = pages.changes_since(s, cursor)
        with db.session() as s:
            after = pages.changes_since(s, tick.cursor, gaps=tick.gaps)
            assert s.scalar(select(func.count()).select_from(Ticket)) == 2
        assert early in tick.created and late not in tick.created
        assert late in after.created and not after.gaps
    finally:
        db.close()


# ------------------------------------------------------------------ read marks


def test_read_marks_and_unread(db: Database) -> None:
    w = build_world(db, n=2)
    tid = min(w.specs)
    me, carol_id = w.me_id, w.people[CAROL]
    with db.write() as s:
        s.execute(delete(TicketRead))  # start with no marks at all
    unread_q = parse_query(f"is:unread id:{tid}")

    def state() -> tuple[bool, bool, int | None]:
        with db.session() as s:
            in_view = pages.count(s, unread_q, me) == 1
            (row,) = pages.fetch_page(s, parse_query(f"id:{tid}"), me)
            mark = s.get(TicketRead, (me, tid))
            version = mark.version if mark else None
        assert row.unread == in_view
        return in_view, row.unread, version

    def version() -> int:
        with db.session() as s:
            return services.current_version(s, tid)

    v1 = version()
    assert state() == (True, True, None)
    with db.write() as s:
        pages.mark_read(s, me, tid, v1)
    assert state() == (False, False, v1)
    with db.write() as s:  # someone else's mark changes nothing for me
        pages.mark_read(s, carol_id, tid, v1 + 5)
    assert state() == (False, False, v1)

    with db.write() as s:  # a change by carol bumps the version: unread again
        services.set_category(s, tid, v1, s.get_one(Person, carol_id), "Changed")
    v2 = version()
    assert v2 == v1 + 1
    assert state() == (True, True, v1)
    with db.write() as s:  # an older version never moves the mark back
        pages.mark_read(s, me, tid, v1 - 1)
    assert state() == (True, True, v1)
    with db.write() as s:
        pages.mark_read(s, me, tid, v2)
    assert state() == (False, False, v2)
    with db.write() as s:
        pages.mark_read(s, me, tid, v1)
    assert state() == (False, False, v2)

    with db.write() as s:
        pages.mark_unread(s, me, tid)
    assert state() == (True, True, None)
    with db.write() as s:  # nothing to forget: fine
        pages.mark_unread(s, me, tid)
    with db.write() as s:  # twice in one transaction (the first still pending)
        pages.mark_read(s, me, tid, v1)
        pages.mark_read(s, me, tid, v2)
        pages.mark_read(s, me, tid, v1)
    assert state() == (False, False, v2)
    with db.session() as s:  # carol's mark is untouched by all of mine
        mark = s.get(TicketRead, (carol_id, tid))
        assert mark is not None and mark.version == v1 + 5


# ------------------------------------------------------------------ saved views


def test_saved_views(db: Database) -> None:
    with db.write() as s:
        alice = services.get_or_create_person(s, ME, provider=True).id
        carol = services.get_or_create_person(s, CAROL, provider=True).id
    with db.write() as s:
        pages.save_view(s, alice, "urgent", "prio:>=high sort:-prio")
        pages.save_view(s, alice, "  Mine  ", "is:mine")
        pages.save_view(s, alice, "b-team", "queue:hr")
        pages.save_view(s, carol, "urgent", "prio:urgent")
    with db.write() as s:  # overwrite keeps one row
        pages.save_view(s, alice, "urgent", "prio:urgent is:active")
    with db.session() as s:
        assert pages.saved_views(s, alice) == [
            ("Mine", "is:mine"),
            ("b-team", "queue:hr"),
            ("urgent", "prio:urgent is:active"),
        ]
        assert pages.saved_views(s, carol) == [("urgent", "prio:urgent")]
        assert len(s.scalars(select(SavedView)).all()) == 4
    with db.write() as s:
        assert pages.delete_view(s, alice, "urgent") is True
        assert pages.delete_view(s, alice, "urgent") is False
        assert pages.delete_view(s, alice, "nosuch") is False
    with db.session() as s:
        assert [n for n, _ in pages.saved_views(s, alice)] == ["Mine", "b-team"]
        assert pages.saved_views(s, carol) == [("urgent", "prio:urgent")]
        assert pages.saved_views(s, 999_999) == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "new\nline", "bell\x07"])
def test_saved_view_bad_names(db: Database, name: str) -> None:
    with db.write() as s:
        alice = services.get_or_create_person(s, ME, provider=True).id
    with pytest.raises(ValueError, match="1 to 64 printable"), db.write() as s:
        pages.save_view(s, alice, name, "is:mine")
    with db.write() as s:
        pages.save_view(s, alice, "x" * 64, "ok")
        pages.save_view(s, alice, "  é ünïcode ✓ ", "ok")
    with db.session() as s:
        assert sorted(n for n, _ in pages.saved_views(s, alice)) == ["x" * 64, "é ünïcode ✓"]


# ------------------------------------------------------------------ bugs found on the way


def _small(db: Database) -> tuple[int, int]:
    """Ticket a: unassigned, no category; ticket b: carol's, category Network."""
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        queue = s.scalars(select(Queue).where(Queue.key == "it")).one()
        bob = services.get_or_create_person(s, "bob@corp.example")
        carol = services.get_or_create_person(s, CAROL, provider=True)
        a = services.open_ticket(s, queue=queue, requester=bob, subject="a")
        b = services.open_ticket(s, queue=queue, requester=bob, subject="b")
        services.assign(s, b.id, 1, carol, carol)
        services.set_category(s, b.id, 2, carol, "Network")
        return a.id, b.id


@pytest.mark.parametrize("text", ["-assignee:carol", "-is:mine", "-category:network"])
def test_negation_keeps_tickets_where_the_field_is_empty(db: Database, text: str) -> None:
    a, _ = _small(db)
    with db.session() as s:
        carol = pages.person_id(s, CAROL)
        got = s.scalars(select(Ticket.id).where(*conditions(s, parse_query(text), carol))).all()
    assert got == [a]


def test_non_ascii_case_folding(db: Database) -> None:
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        queue = s.scalars(select(Queue).where(Queue.key == "it")).one()
        elodie = services.get_or_create_person(s, "elodie@corp.example", "Élodie Dupont")
        alice = services.get_or_create_person(s, ME, provider=True)
        t = services.open_ticket(s, queue=queue, requester=elodie, subject="Lampe")
        services.set_category(s, t.id, 1, alice, "Éclairage")
        tid = t.id
    w = World(db, utcnow(), 0, {}, {})
    for text in ("from:élodie", "from:ÉLODIE", "category:éclairage", "category:ÉCLAIRAGE"):
        assert _ids(w, text) == [tid], text


def test_search_words_match_alike_on_both_backends(db: Database) -> None:
    """Accents fold on both backends (SQLite's remove_diacritics, PostgreSQL's unaccent)."""
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        queue = s.scalars(select(Queue).where(Queue.key == "it")).one()
        bob = services.get_or_create_person(s, "bob@corp.example")
        t = services.open_ticket(s, queue=queue, requester=bob, subject="Kaffee")
        s.add(
            Message(
                ticket_id=t.id,
                direction=Direction.INBOUND,
                subject="Le café",
                text_body="la machine à café est cassée",
            )
        )
        tid = t.id
    w = World(db, utcnow(), 0, {}, {})
    for text in ("café", "CAFÉ", "machine cassée", "cafe", "cassee"):
        assert _ids(w, text) == [tid], text


def test_search_follows_edits_of_long_bodies(db: Database) -> None:
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        queue = s.scalars(select(Queue).where(Queue.key == "it")).one()
        bob = services.get_or_create_person(s, "bob@corp.example")
        t = services.open_ticket(s, queue=queue, requester=bob, subject="log")
        m = Message(
            ticket_id=t.id,
            direction=Direction.INBOUND,
            subject="log",
            text_body="alpha " + "filler " * 10_000 + "omega",
        )
        s.add(m)
        s.flush()
        tid, mid = t.id, m.id
    w = World(db, utcnow(), 0, {}, {})
    assert _ids(w, "alpha") == [tid] and _ids(w, "omega") == []  # only the first 64k
    with db.write() as s:
        message = s.get(Message, mid)
        assert message is not None
        message.text_body = "gamma"
    assert _ids(w, "gamma") == [tid] and _ids(w, "alpha") == []
