"""Triage actions: each changes a ticket, bumps its version and appends its events, atomically.

Every action takes the version the provider was looking at. If the ticket moved on
since, :class:`ConflictError` says what changed and nothing is written: deskq never
overwrites another provider's change silently. The caller owns the session and the
transaction (``with db.write() as session: claim(session, ...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from store.models import (
    Direction,
    Event,
    Message,
    Person,
    Priority,
    Queue,
    Status,
    Ticket,
    TicketFlag,
    TicketLink,
    TicketTag,
    text_columns,
    utcnow,
)


class ActionError(Exception):
    """A triage action that cannot be done; the message is meant for the user."""


class NotFoundError(ActionError):
    """No ticket (or person) with that identity."""


class ConflictError(ActionError):
    """The ticket changed since the version the provider acted on.

    ``changes`` lists the events recorded since, as ``(version, kind, actor, data)``,
    so a UI can show what happened and offer to re-apply or drop the action.
    """

    def __init__(
        self,
        ticket_id: int,
        expected: int,
        current: int,
        changes: list[tuple[int, str, str | None, dict[str, Any]]],
    ) -> None:
        self.ticket_id, self.expected, self.current, self.changes = (
            ticket_id,
            expected,
            current,
            changes,
        )
        what = (
            ", ".join(f"{kind} by {actor or 'deskq'}" for _, kind, actor, _ in changes)
            or "an update"
        )
        super().__init__(
            f"ticket #{ticket_id} changed since you looked at it (version {expected}, now "
            f"{current}: {what}); reload it and apply your change again if it still makes sense."
        )


def normalise_address(address: str) -> str:
    """Addresses are compared case-insensitively and stored lower-cased."""
    return address.strip().lower()


def get_or_create_person(
    session: Session, address: str, name: str = "", provider: bool = False
) -> Person:
    """The person with this address, created on first sight; learns a missing display name."""
    address = normalise_address(address)
    person = session.scalar(select(Person).where(Person.address == address))
    if person is None:
        person = Person(address=address, display_name=name, is_provider=provider)
        session.add(person)
        session.flush()
    else:
        if name and not person.display_name:
            person.display_name = name
        if provider and not person.is_provider:
            person.is_provider = True
    return person


_ACTING_AT: ContextVar[datetime | None] = ContextVar("deskq_acting_at", default=None)


@contextmanager
def acting_at(at: datetime) -> Iterator[None]:
    """Stamp the actions taken inside with ``at`` instead of now (imports, the demo)."""
    token = _ACTING_AT.set(at)
    try:
        yield
    finally:
        _ACTING_AT.reset(token)


def record_event(
    session: Session,
    ticket: Ticket,
    kind: str,
    actor: Person | None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Event:
    """Append one event at the ticket's current version (the caller bumps the version)."""
    event = Event(
        ticket_id=ticket.id,
        kind=kind,
        actor_id=actor.id if actor else None,
        version=ticket.version,
        data=data or {},
        at=at or _ACTING_AT.get() or utcnow(),
    )
    session.add(event)
    return event


def open_ticket(
    session: Session,
    *,
    queue: Queue,
    requester: Person,
    subject: str,
    at: datetime | None = None,
    priority: Priority = Priority.NORMAL,
    actor: Person | None = None,
    data: dict[str, Any] | None = None,
) -> Ticket:
    """Create a ticket in state ``new`` together with its ``created`` event."""
    at = at or utcnow()
    ticket = Ticket(
        queue_id=queue.id,
        requester_id=requester.id,
        subject=subject,
        status=Status.NEW,
        priority=priority,
        created_at=at,
        updated_at=at,
        version=1,
    )
    session.add(ticket)
    session.flush()
    record_event(
        session,
        ticket,
        "created",
        actor,
        {
            "queue": queue.key,
            "status": Status.NEW.value,
            "priority": priority.value,
            "requester": requester.address,
            **(data or {}),
        },
        at=at,
    )
    return ticket


def current_version(session: Session, ticket_id: int) -> int:
    """The ticket's version as stored now."""
    version = session.scalar(select(Ticket.version).where(Ticket.id == ticket_id))
    if version is None:
        raise NotFoundError(f"there is no ticket #{ticket_id}")
    return version


def _changes_since(
    session: Session, ticket_id: int, version: int
) -> list[tuple[int, str, str | None, dict[str, Any]]]:
    rows = session.execute(
        select(Event.version, Event.kind, Person.address, Event.data)
        .outerjoin(Person, Person.id == Event.actor_id)
        .where(Event.ticket_id == ticket_id, Event.version > version)
        .order_by(Event.id)
    ).all()
    return [(v, k, a, d) for v, k, a, d in rows]


def _load_for_change(session: Session, ticket_id: int, expected_version: int | None) -> Ticket:
    ticket = session.scalar(
        select(Ticket)
        .where(Ticket.id == ticket_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if ticket is None:
        raise NotFoundError(f"there is no ticket #{ticket_id}")
    if expected_version is not None and ticket.version != expected_version:
        raise ConflictError(
            ticket_id,
            expected_version,
            ticket.version,
            _changes_since(session, ticket_id, expected_version),
        )
    return ticket


class _Change:
    """One action on one ticket: version check on entry, then its events.

    The version is bumped once, with the first event: an action that turns out to
    change nothing leaves the ticket (and its version) as it was.
    """

    def __init__(
        self,
        session: Session,
        ticket_id: int,
        expected_version: int | None,
        actor: Person | None,
    ) -> None:
        self.session, self.actor = session, actor
        self.ticket = _load_for_change(session, ticket_id, expected_version)
        # None: act on the version locked now (a command-line action on a ticket by id).
        self.expected = self.ticket.version if expected_version is None else expected_version
        self.at = _ACTING_AT.get() or utcnow()

    def event(self, kind: str, data: dict[str, Any] | None = None) -> Event:
        if self.ticket.version == self.expected:
            self.ticket.version = self.expected + 1
            self.ticket.updated_at = self.at
        return record_event(self.session, self.ticket, kind, self.actor, data, at=self.at)

    def set_status(self, status: Status, reason: str = "") -> None:
        old = self.ticket.status
        if old == status:
            return
        self.ticket.status = status
        if status == Status.RESOLVED:
            self.ticket.resolved_at = self.at
        elif status == Status.CLOSED:
            self.ticket.closed_at = self.at
            self.ticket.resolved_at = self.ticket.resolved_at or self.at
        else:
            self.ticket.resolved_at = None
            self.ticket.closed_at = None
        data = {"from": old.value, "to": status.value}
        self.event("status", {**data, "reason": reason} if reason else data)

    def flush(self) -> Ticket:
        try:
            self.session.flush()
        except StaleDataError:
            # Someone committed between our read and our write (possible on
            # backends without row locks): report it as the conflict it is.
            self.session.rollback()
            current = self.session.scalar(select(Ticket.version).where(Ticket.id == self.ticket.id))
            raise ConflictError(
                self.ticket.id,
                self.expected,
                current or 0,
                _changes_since(self.session, self.ticket.id, self.expected),
            ) from None
        return self.ticket


def _address(person: Person | None) -> str | None:
    return person.address if person else None


def claim(session: Session, ticket_id: int, version: int, actor: Person) -> Ticket:
    """Take the ticket: assign it to ``actor``; a new ticket becomes open."""
    change = _Change(session, ticket_id, version, actor)
    ticket = change.ticket
    if ticket.assignee_id not in (None, actor.id):
        holder = session.get(Person, ticket.assignee_id)
        raise ActionError(
            f"ticket #{ticket_id} is already assigned to {_address(holder)}; "
            "use assign to take it over."
        )
    if ticket.assignee_id is None:
        ticket.assignee_id = actor.id
        change.event("assignment", {"from": None, "to": actor.address})
    if ticket.status == Status.NEW:
        change.set_status(Status.OPEN)
    return change.flush()


def assign(
    session: Session, ticket_id: int, version: int, actor: Person, assignee: Person | None
) -> Ticket:
    """Give the ticket to ``assignee`` (None: unassign)."""
    change = _Change(session, ticket_id, version, actor)
    old = session.get(Person, change.ticket.assignee_id) if change.ticket.assignee_id else None
    if old is not None and assignee is not None and old.id == assignee.id:
        return change.flush()
    if assignee is not None and not assignee.is_provider:
        assignee.is_provider = True
    change.ticket.assignee_id = assignee.id if assignee else None
    change.event("assignment", {"from": _address(old), "to": _address(assignee)})
    return change.flush()


def set_status(
    session: Session, ticket_id: int, version: int, actor: Person | None, status: Status
) -> Ticket:
    """Move the ticket to ``status`` (resolved and closed stamp their times)."""
    change = _Change(session, ticket_id, version, actor)
    if change.ticket.merged_into_id is not None and status != Status.CLOSED:
        raise ActionError(
            f"ticket #{ticket_id} was merged into #{change.ticket.merged_into_id}; act on that one."
        )
    change.set_status(status)
    return change.flush()


def set_priority(
    session: Session, ticket_id: int, version: int, actor: Person, priority: Priority
) -> Ticket:
    """Change the ticket's priority."""
    change = _Change(session, ticket_id, version, actor)
    old = change.ticket.priority
    if old != priority:
        change.ticket.priority = priority
        change.event("priority", {"from": old.value, "to": priority.value})
    return change.flush()


def set_category(
    session: Session, ticket_id: int, version: int, actor: Person, category: str | None
) -> Ticket:
    """Set (or with None clear) the ticket's category."""
    category = (category or "").strip() or None
    if category and (len(category) > 100 or not category.isprintable()):
        raise ActionError("a category is at most 100 printable characters")
    change = _Change(session, ticket_id, version, actor)
    old = change.ticket.category
    if old != category:
        change.ticket.category = category
        change.event("category", {"from": old, "to": category})
    return change.flush()


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags are trimmed, lower-cased, without spaces or commas, unique and sorted."""
    result: set[str] = set()
    for raw in tags:
        tag = raw.strip().lower()
        if not tag:
            continue
        if any(c.isspace() or c == "," or not c.isprintable() for c in tag) or len(tag) > 64:
            raise ActionError(f"tag {raw!r}: tags are single words of at most 64 characters")
        result.add(tag)
    return sorted(result)


def set_tags(
    session: Session, ticket_id: int, version: int, actor: Person, tags: Iterable[str]
) -> Ticket:
    """Replace the ticket's tags."""
    wanted = clean_tags(tags)
    change = _Change(session, ticket_id, version, actor)
    old = sorted(t.tag for t in change.ticket.tags)
    if old != wanted:
        change.ticket.tags = [TicketTag(tag=t) for t in wanted]
        change.event(
            "tags",
            {"added": sorted(set(wanted) - set(old)), "removed": sorted(set(old) - set(wanted))},
        )
    return change.flush()


def add_note(session: Session, ticket_id: int, version: int, actor: Person, text: str) -> Message:
    """Add an internal note (never sent to the requester)."""
    if not text.strip():
        raise ActionError("a note needs some text")
    change = _Change(session, ticket_id, version, actor)
    note = Message(
        ticket_id=ticket_id,
        direction=Direction.NOTE,
        author_id=actor.id,
        from_addr=actor.address,
        subject=change.ticket.subject,
        **text_columns(text),
        date=change.at,
        created_at=change.at,
        threaded_by="note",
    )
    session.add(note)
    session.flush()
    change.event("note", {"message": note.id})
    change.flush()
    return note


def _link_pair(session: Session, a: int, b: int, kind: str) -> bool:
    exists = session.get(TicketLink, (a, b))
    if exists is not None:
        return False
    session.add_all(
        [
            TicketLink(ticket_id=a, other_id=b, kind=kind),
            TicketLink(ticket_id=b, other_id=a, kind=kind),
        ]
    )
    return True


def link(
    session: Session,
    ticket_id: int,
    version: int,
    actor: Person | None,
    other_id: int,
    kind: str = "related",
) -> Ticket:
    """Link two tickets (both directions); the other ticket gets an event too."""
    if other_id == ticket_id:
        raise ActionError("a ticket cannot be linked to itself")
    other = session.get(Ticket, other_id)
    if other is None:
        raise NotFoundError(f"there is no ticket #{other_id}")
    change = _Change(session, ticket_id, version, actor)
    if _link_pair(session, ticket_id, other_id, kind):
        change.event("link", {"other": other_id, "kind": kind})
        # The other side did not ask for this change: bump without a version check.
        _bump(session, other, "link", actor, {"other": ticket_id, "kind": kind}, change.at)
    return change.flush()


# The kind of link between a stand-in's ticket and those its email went to once read.
STAND_IN_LINK = "stand-in"


def settle_stand_in(
    session: Session, ticket_id: int, stand_in_id: str, stored_in: Iterable[int]
) -> Ticket:
    """The email a stand-in (a ticket flagged unreadable) stood for is stored now.

    ``stand_in_id``: the stand-in's Message-ID; ``stored_in``: the tickets the email
    went to (none: deskq's own mail). The stand-in's ticket is linked to each and
    resolved: its work is done. Unless it is resolved or closed already, or holds other
    mail (a provider merged some into it): then it is only linked. Done by deskq, at
    whatever version the ticket has.
    """
    change = _Change(session, ticket_id, None, None)
    stored = sorted({t for t in stored_in if t != ticket_id})
    for other_id in stored:
        other = session.get(Ticket, other_id)
        if other is not None and _link_pair(session, ticket_id, other_id, STAND_IN_LINK):
            change.event("link", {"other": other_id, "kind": STAND_IN_LINK})
            data = {"other": ticket_id, "kind": STAND_IN_LINK}
            _bump(session, other, "link", None, data, change.at)
    ticket = change.ticket
    other_mail = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            Message.ticket_id == ticket_id,
            Message.direction == Direction.INBOUND,
            Message.message_id.is_distinct_from(stand_in_id),
        )
    )
    if ticket.status not in (Status.RESOLVED, Status.CLOSED) and not other_mail:
        where = ", ".join(f"#{t}" for t in stored) or "deskq's own mail, no ticket"
        change.set_status(Status.RESOLVED, f"its email was read: {where}")
    return change.flush()


def _bump(
    session: Session,
    ticket: Ticket,
    kind: str,
    actor: Person | None,
    data: dict[str, Any],
    at: datetime,
) -> None:
    session.execute(
        update(Ticket)
        .where(Ticket.id == ticket.id)
        .values(version=Ticket.version + 1, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    session.refresh(ticket, ["version"])
    record_event(session, ticket, kind, actor, data, at=at)


def merge(
    session: Session,
    source_id: int,
    source_version: int,
    target_id: int,
    target_version: int,
    actor: Person,
) -> Ticket:
    """Merge ``source`` into ``target``: its messages and tags move, it is closed as merged."""
    if source_id == target_id:
        raise ActionError("a ticket cannot be merged into itself")
    # Lock in id order so two providers merging the same pair cannot deadlock.
    first, second = sorted([(source_id, source_version), (target_id, target_version)])
    changes = {tid: _Change(session, tid, ver, actor) for tid, ver in (first, second)}
    source, target = changes[source_id].ticket, changes[target_id].ticket
    for t, role in ((source, "source"), (target, "target")):
        if t.merged_into_id is not None:
            raise ActionError(f"the {role} #{t.id} was itself merged into #{t.merged_into_id}")
    moved: int = session.execute(  # type: ignore[attr-defined]  # CursorResult.rowcount
        update(Message)
        .where(Message.ticket_id == source_id)
        .values(ticket_id=target_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    new_tags = {t.tag for t in source.tags} - {t.tag for t in target.tags}
    target.tags.extend(TicketTag(tag=t) for t in sorted(new_tags))
    source.merged_into_id = target_id
    changes[source_id].set_status(Status.CLOSED)
    changes[source_id].event("merged", {"into": target_id, "messages": moved})
    changes[target_id].event(
        "merge", {"from": source_id, "messages": moved, "tags": sorted(new_tags)}
    )
    _link_pair(session, source_id, target_id, "merged")
    changes[source_id].flush()
    return changes[target_id].flush()


def release(session: Session, ticket_id: int, version: int | None, actor: Person) -> Ticket:
    """Let a quarantined ticket into its queue (the flag goes, an event records who)."""
    change = _Change(session, ticket_id, version, actor)
    flag = session.get(TicketFlag, (ticket_id, "quarantined"))
    if flag is None:
        raise ActionError(f"ticket #{ticket_id} is not quarantined")
    session.delete(flag)
    change.event("released", {"flag": "quarantined", "detail": flag.detail})
    return change.flush()


def split(session: Session, ticket_id: int, version: int, actor: Person, message_id: int) -> Ticket:
    """Move one inbound message out into a new ticket of the same queue, linked to this one.

    For the reply that was really a new request. The new ticket's requester is the
    message's sender and its subject the message's subject; returns the new ticket.
    """
    change = _Change(session, ticket_id, version, actor)
    message = session.get(Message, message_id)
    if message is None or message.ticket_id != ticket_id:
        raise NotFoundError(f"ticket #{ticket_id} has no message {message_id}")
    if message.direction != Direction.INBOUND:
        raise ActionError("only an inbound message can be split out into a new ticket")
    remaining = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.ticket_id == ticket_id, Message.direction == Direction.INBOUND)
    )
    if (remaining or 0) < 2:
        raise ActionError("the ticket's only inbound message cannot be split out")
    queue = session.get_one(Queue, change.ticket.queue_id)
    # The sender as ingestion recorded it (from_addr is the display form "Name <addr>").
    requester = session.get(Person, message.author_id) if message.author_id else None
    if requester is None:
        name, address = parseaddr(message.from_addr)
        if "@" in address:
            requester = get_or_create_person(session, address, name)
        else:
            requester = session.get_one(Person, change.ticket.requester_id)
    new = open_ticket(
        session,
        queue=queue,
        requester=requester,
        subject=message.subject or change.ticket.subject,
        at=change.at,
        priority=change.ticket.priority,
        actor=actor,
        data={"split_from": ticket_id, "message": message_id},
    )
    message.ticket_id = new.id
    message.threaded_by = f"split out of #{ticket_id}"
    new.updated_at = change.at
    _link_pair(session, ticket_id, new.id, "split")
    change.event("split", {"message": message_id, "into": new.id})
    change.flush()
    session.flush()
    return new


def record_reply(
    session: Session,
    ticket_id: int,
    version: int | None,
    actor: Person,
    message: Message,
    status: Status | None = None,
    data: dict[str, Any] | None = None,
) -> Ticket:
    """Add our outgoing ``message`` to the ticket, with its event and the status it leads to.

    Checked against ``version`` like every action: a reply composed before a new
    message or another provider's change arrived is not sent on top of it.
    """
    change = _Change(session, ticket_id, version, actor)
    if change.ticket.merged_into_id is not None:
        raise ActionError(
            f"ticket #{ticket_id} was merged into #{change.ticket.merged_into_id}; reply there."
        )
    message.ticket_id = ticket_id
    message.author_id = actor.id
    session.add(message)
    session.flush()
    kind = "note" if message.direction == Direction.NOTE else "reply"
    change.event(kind, {"message": message.id, **(data or {})})
    if status is not None:
        change.set_status(status)
    elif kind == "reply" and change.ticket.status == Status.NEW:
        change.set_status(Status.OPEN)
    return change.flush()
