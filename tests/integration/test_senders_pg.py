"""Several senders on one PostgreSQL outbox: 1,000 replies, each delivered exactly once.

Two senders, each with its own engine (its own connections, as two hosts would have),
drain the outbox at the same time into aiosmtpd. Rows are claimed with
``FOR UPDATE SKIP LOCKED``, so neither waits for the other and no row is taken twice;
the SLA clocks of the tickets both of them touch stay equal to a replay of the log.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from mail import sender
from store import clocks, services
from store.config import parse_settings
from store.db import Database
from store.models import (
    Event,
    OutboxItem,
    OutboxState,
    Queue,
    Status,
    Ticket,
    TicketClock,
)
from store.sla import clocks_for
from store.workspace import sync_queues
from tests.integration.test_sender import QUEUE, enqueue_reply, settings_for
from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.postgres

REPLIES = 1_000
TICKETS = 40
RULES = '\n[[sla]]\nfirst_response = "4h"\nresolution = "3d"\n'


def _queue_replies(db: Database) -> dict[int, int]:
    """REPLIES queued replies spread over TICKETS tickets: outbox id -> ticket id."""
    placed: dict[int, int] = {}
    with db.write() as s:
        queue = s.scalars(select(Queue)).one()
        emp = services.get_or_create_person(s, "emp@corp.example", "Em Ployee")
        tickets = [
            services.open_ticket(s, queue=queue, requester=emp, subject=f"Request {n}")
            for n in range(TICKETS)
        ]
        s.flush()
        for n in range(REPLIES):
            t = tickets[n % TICKETS]
            item = enqueue_reply(s, queue, t, f"Re: Request {n}", f"Answer number {n}.\n")
            s.flush()
            placed[item.id] = t.id
    return placed


def test_two_senders_deliver_a_thousand_replies_exactly_once(pg_url: str, smtp: SmtpServer) -> None:
    settings = parse_settings(QUEUE + RULES)
    keeper = clocks.Keeper.from_settings(settings)
    main = Database.open(pg_url)
    with main.write() as s:
        sync_queues(s, settings)
    main.keep_clocks(keeper)
    placed = _queue_replies(main)
    transport_settings = settings_for(smtp)
    sent: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def drain(name: str) -> None:
        db = Database.open(pg_url, upgrade=False)  # a host of its own: its own connections
        db.keep_clocks(keeper)
        mine: list[int] = []
        try:
            while True:
                report = sender.send_due(db, sender.make_transport(transport_settings), limit=20)
                if report.failed or report.retrying:
                    raise AssertionError(f"{name}: {report}")
                if not report.sent:
                    break
                mine += report.sent
        except BaseException as exc:  # noqa: BLE001 (reported below, the thread ends)
            errors.append(exc)
        finally:
            sent[name] = mine
            db.close()

    workers = [threading.Thread(target=drain, args=(f"sender-{n}",)) for n in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert not errors, errors
    assert not any(w.is_alive() for w in workers)

    # every reply sent by exactly one sender, and received exactly once
    claimed = sent["sender-1"] + sent["sender-2"]
    assert sorted(claimed) == sorted(placed)
    assert sent["sender-1"] and sent["sender-2"], "both senders worked at the same time"
    ids = Counter(r.message["Message-ID"] for r in smtp.received)
    assert len(ids) == REPLIES and set(ids.values()) == {1}
    with main.session() as s:
        states = Counter(s.scalars(select(OutboxItem.state)))
        assert states == {OutboxState.SENT: REPLIES}
        sent_events = s.scalar(select(func.count()).where(Event.kind == "sent"))
        assert sent_events == REPLIES
        # the clock cache saw every "sent" event, although two writers appended them
        for tid in set(placed.values()):
            events = s.execute(
                select(Event.at, Event.kind, Event.data)
                .where(Event.ticket_id == tid)
                .order_by(Event.id)
            ).all()
            replay = clocks_for(keeper.calendar, [(a, k, d) for a, k, d in events])
            row = s.get(TicketClock, tid)
            assert row is not None
            last = s.scalar(select(func.max(Event.id)).where(Event.ticket_id == tid))
            assert row.last_event_id == last
            assert row.state == pytest.approx(replay.to_state())
    main.close()


def test_two_writers_on_one_ticket_keep_its_clocks_whole(pg_url: str) -> None:
    """Writer 1 appends an event and holds its transaction open; writer 2 appends one to
    the same ticket without locking the ticket (as the sender does). The clock row must
    end up with both events: the second waits for the first's row, then reads it."""
    settings = parse_settings(QUEUE + RULES)
    keeper = clocks.Keeper.from_settings(settings)
    db = Database.open(pg_url)
    with db.write() as s:
        sync_queues(s, settings)
    db.keep_clocks(keeper)
    with db.write() as s:
        queue = s.scalars(select(Queue)).one()
        emp = services.get_or_create_person(s, "emp@corp.example")
        tid = services.open_ticket(s, queue=queue, requester=emp, subject="Both").id
    first_flushed, second_done = threading.Event(), threading.Event()

    def second() -> None:
        first_flushed.wait(10)
        with db.write() as s:
            t = s.get_one(Ticket, tid)
            services.record_event(s, t, "sent", None, {"outbox": 2, "kind": "reply"})
        second_done.set()

    worker = threading.Thread(target=second)
    worker.start()
    with db.write() as s:
        t = s.get_one(Ticket, tid)
        t.status, t.version = Status.PENDING, t.version + 1
        services.record_event(s, t, "status", None, {"from": "new", "to": "pending"})
        s.flush()  # the hook has updated (and locked) the clock row
        first_flushed.set()
        assert not second_done.wait(1.0), "the second writer did not wait for the first"
    worker.join(10)
    assert second_done.is_set()
    with db.session() as s:
        log = select(Event.at, Event.kind, Event.data).where(Event.ticket_id == tid)
        events = s.execute(log.order_by(Event.id)).all()
        assert [k for _, k, _ in events] == ["created", "status", "sent"]
        replay = clocks_for(keeper.calendar, [(a, k, d) for a, k, d in events])
        row = s.get_one(TicketClock, tid)
        assert row.state == pytest.approx(replay.to_state())
        assert row.status == "pending" and row.state["first_reply"] is not None
    db.close()
