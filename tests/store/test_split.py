"""services.split: one inbound message moves out into a new, linked ticket (both backends)."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formataddr

import pytest
from sqlalchemy import func, select

from store import services
from store.config import parse_settings
from store.db import Database
from store.models import Direction, Event, Message, Person, Priority, Queue, Ticket
from store.pages import change_cursor, changes_since
from store.views import iter_tickets, ticket_detail
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
"""


@dataclass
class Thread:
    """A ticket in the hr queue with: bob's request, our reply, carol's mail, a note."""

    ticket: int
    request: int
    reply: int
    other: int
    note: int
    version: int


def _message(
    ticket_id: int,
    direction: Direction,
    from_addr: str,
    subject: str,
    body: str,
    author_id: int | None = None,
) -> Message:
    return Message(
        ticket_id=ticket_id,
        direction=direction,
        author_id=author_id,
        from_addr=from_addr,
        subject=subject,
        text_body=body,
        threaded_by="test",
    )


def _alice(db: Database) -> Person:
    with db.write() as s:
        return services.get_or_create_person(s, "alice@corp.example", "Alice", provider=True)


def _thread(db: Database, *, carol_from: str = "carol@corp.example") -> Thread:
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        hr = s.scalars(select(Queue).where(Queue.key == "hr")).one()
        assert hr is not None
        bob = services.get_or_create_person(s, "bob@corp.example", "Bob")
        carol = services.get_or_create_person(s, "carol@corp.example", "Carol Example")
        alice = services.get_or_create_person(s, "alice@corp.example", "Alice", provider=True)
        t = services.open_ticket(
            s, queue=hr, requester=bob, subject="VPN is down", priority=Priority.HIGH
        )
        msgs = [
            _message(t.id, Direction.INBOUND, "bob@corp.example", "VPN is down", "since 9", bob.id),
            _message(t.id, Direction.OUTBOUND, "hr@corp.example", "Re: VPN is down", "on it"),
            _message(
                t.id,
                Direction.INBOUND,
                carol_from,
                "Printer on the 3rd floor",
                "the printer is jammed again",
                carol.id,
            ),
            _message(t.id, Direction.NOTE, "alice@corp.example", "", "internal", alice.id),
        ]
        s.add_all(msgs)
        s.flush()
        t = services.set_category(s, t.id, t.version, alice, "Network")
        request, reply, other, note = (m.id for m in msgs)
        return Thread(t.id, request, reply, other, note, t.version)


def _count(db: Database, model: type[Ticket] | type[Message]) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_split_moves_one_message_into_a_linked_ticket(db: Database) -> None:
    th = _thread(db)
    alice = _alice(db)
    with db.session() as s:
        cursor = change_cursor(s)
    with db.write() as s:
        new = services.split(s, th.ticket, th.version, alice, th.other)
        new_id = new.id
        assert new.version == 1
    assert new_id != th.ticket

    with db.session() as s:
        old, fresh = ticket_detail(s, th.ticket), ticket_detail(s, new_id)
        carol = s.scalar(select(Person).where(Person.address == "carol@corp.example"))
        people = s.scalar(select(func.count()).select_from(Person))
        events = s.execute(
            select(Event.ticket_id, Event.kind, Event.version, Event.data, Event.actor_id)
            .where(Event.id > cursor)
            .order_by(Event.id)
        ).all()
        changes = changes_since(s, cursor)
    assert old is not None and fresh is not None and carol is not None
    assert people == 3  # carol was known: no new person

    # the new ticket: same queue and priority, carol's request, only her message
    assert fresh.ticket.queue == "hr" and fresh.ticket.priority == "high"
    assert fresh.ticket.status == "new" and fresh.ticket.category is None
    assert fresh.ticket.requester.address == "carol@corp.example"
    assert fresh.ticket.subject == "Printer on the 3rd floor"
    assert [m.id for m in fresh.messages] == [th.other]
    assert fresh.messages[0].threaded_by == f"split out of #{th.ticket}"
    assert fresh.ticket.updated_at == fresh.ticket.created_at

    # the old ticket keeps everything else and moves on one version
    assert [m.id for m in old.messages] == [th.request, th.reply, th.note]
    assert old.ticket.version == th.version + 1
    assert old.ticket.requester.address == "bob@corp.example"

    # linked both ways as "split", an event on each ticket
    assert old.links == ((new_id, "split"),)
    assert fresh.links == ((th.ticket, "split"),)
    assert [(e.kind, e.version, e.data) for e in fresh.events] == [
        (
            "created",
            1,
            {
                "queue": "hr",
                "status": "new",
                "priority": "high",
                "requester": "carol@corp.example",
                "split_from": th.ticket,
                "message": th.other,
            },
        )
    ]
    assert fresh.events[0].actor == "alice@corp.example"
    assert old.events[-1].kind == "split"
    assert old.events[-1].data == {"message": th.other, "into": new_id}
    assert old.events[-1].version == th.version + 1
    assert old.events[-1].actor == "alice@corp.example"
    assert sorted((tid, kind) for tid, kind, *_ in events) == sorted(
        [(new_id, "created"), (th.ticket, "split")]
    )
    assert changes.touched == {th.ticket, new_id} and changes.created == {new_id}

    # full-text search follows the message to its new ticket
    with db.session() as s:
        assert [t.id for t in iter_tickets(s, search="jammed")] == [new_id]
        assert [t.id for t in iter_tickets(s, search="since")] == [th.ticket]
        assert [t.id for t in iter_tickets(s, queue="hr")] == [th.ticket, new_id]


def test_split_subject_falls_back_to_the_ticket_subject(db: Database) -> None:
    th = _thread(db)
    alice = _alice(db)
    with db.write() as s:
        m = s.get(Message, th.other)
        assert m is not None
        m.subject = ""
    with db.write() as s:
        new_id = services.split(s, th.ticket, th.version, alice, th.other).id
    with db.session() as s:
        fresh = ticket_detail(s, new_id)
    assert fresh is not None and fresh.ticket.subject == "VPN is down"


def _unchanged(db: Database, th: Thread, tickets: int, messages: int) -> None:
    assert _count(db, Ticket) == tickets and _count(db, Message) == messages
    with db.session() as s:
        detail = ticket_detail(s, th.ticket)
    assert detail is not None
    assert [m.id for m in detail.messages] == [th.request, th.reply, th.other, th.note]
    assert detail.links == ()


def test_split_on_a_stale_version_is_a_conflict(db: Database) -> None:
    th = _thread(db)
    alice = _alice(db)
    with db.write() as s:
        services.set_priority(s, th.ticket, th.version, alice, Priority.URGENT)
    tickets, messages = _count(db, Ticket), _count(db, Message)
    with pytest.raises(services.ConflictError) as info, db.write() as s:
        services.split(s, th.ticket, th.version, alice, th.other)
    assert (info.value.expected, info.value.current) == (th.version, th.version + 1)
    assert [k for _, k, _, _ in info.value.changes] == ["priority"]
    _unchanged(db, th, tickets, messages)


@pytest.mark.parametrize("which", ["reply", "note"])
def test_split_refuses_outbound_and_notes(db: Database, which: str) -> None:
    th = _thread(db)
    alice = _alice(db)
    tickets, messages = _count(db, Ticket), _count(db, Message)
    with pytest.raises(services.ActionError, match="only an inbound message"), db.write() as s:
        services.split(s, th.ticket, th.version, alice, getattr(th, which))
    _unchanged(db, th, tickets, messages)
    with db.session() as s:
        assert services.current_version(s, th.ticket) == th.version


def test_split_refuses_the_only_inbound_message(db: Database) -> None:
    th = _thread(db)
    alice = _alice(db)
    with db.write() as s:
        # carol's mail goes; the ticket keeps one inbound, one outbound and one note
        other = services.split(s, th.ticket, th.version, alice, th.other)
        assert other.id
    version = th.version + 1
    with (
        pytest.raises(services.ActionError, match="only inbound message"),
        db.write() as s,
    ):
        services.split(s, th.ticket, version, alice, th.request)
    with db.session() as s:
        assert services.current_version(s, th.ticket) == version
        m = s.get(Message, th.request)
        assert m is not None and m.ticket_id == th.ticket


def test_split_message_of_another_ticket_is_not_found(db: Database) -> None:
    th = _thread(db)
    alice = _alice(db)
    with db.write() as s:
        hr = s.scalars(select(Queue).where(Queue.key == "hr")).one()
        assert hr is not None
        bob = services.get_or_create_person(s, "bob@corp.example")
        t2 = services.open_ticket(s, queue=hr, requester=bob, subject="another")
        m = _message(t2.id, Direction.INBOUND, "bob@corp.example", "another", "x", bob.id)
        s.add(m)
        s.flush()
        foreign, t2_id = m.id, t2.id
    tickets, messages = _count(db, Ticket), _count(db, Message)
    for message_id in (foreign, 999_999):
        with pytest.raises(services.NotFoundError, match="has no message"), db.write() as s:
            services.split(s, th.ticket, th.version, alice, message_id)
    with pytest.raises(services.NotFoundError), db.write() as s:
        services.split(s, 999_999, 1, alice, th.other)
    _unchanged(db, th, tickets, messages)
    with db.session() as s:
        assert services.current_version(s, t2_id) == 1


def test_split_message_already_split_out_is_not_found(db: Database) -> None:
    th = _thread(db)
    alice = _alice(db)
    with db.write() as s:
        services.split(s, th.ticket, th.version, alice, th.other)
    with pytest.raises(services.NotFoundError), db.write() as s:
        services.split(s, th.ticket, th.version + 1, alice, th.other)


@pytest.mark.parametrize(
    ("from_addr", "author"),
    [
        (formataddr(("Carol Example", "carol@corp.example")), "carol@corp.example"),
        ("", "unknown-sender@deskq.invalid"),
    ],
)
def test_split_requester_is_the_messages_author_as_ingestion_stores_it(
    db: Database, from_addr: str, author: str
) -> None:
    th = _thread(db, carol_from=from_addr)
    alice = _alice(db)
    with db.write() as s:
        author_id = services.get_or_create_person(s, author).id
        m = s.get(Message, th.other)
        assert m is not None
        m.author_id = author_id
    with db.write() as s:
        new = services.split(s, th.ticket, th.version, alice, th.other)
        assert new.requester_id == author_id
