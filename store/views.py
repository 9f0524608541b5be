"""Read side: plain dataclasses of tickets and conversations, never live ORM rows.

These are what the CLI prints and what widgets receive. ``as_json`` gives the stable,
documented JSON of ``deskq list --json`` and ``deskq show --json`` (see the README).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, func, select, text
from sqlalchemy.orm import Session, aliased

from store.models import (
    Attachment,
    Event,
    Message,
    Person,
    Queue,
    Status,
    Ticket,
    TicketFlag,
    TicketLink,
    TicketTag,
)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z suffix (what the JSON output uses)."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class PersonView:
    """An address with its display name."""

    address: str
    name: str

    def as_json(self) -> dict[str, str]:
        return {"address": self.address, "name": self.name}


@dataclass(frozen=True)
class TicketSummary:
    """One row of the queue."""

    id: int
    queue: str
    subject: str
    status: str
    priority: str
    category: str | None
    requester: PersonView
    assignee: PersonView | None
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    version: int
    merged_into: int | None
    messages: int
    tags: tuple[str, ...]
    flags: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The stable JSON object of ``deskq list --json``."""
        return {
            "id": self.id,
            "queue": self.queue,
            "subject": self.subject,
            "status": self.status,
            "priority": self.priority,
            "category": self.category,
            "tags": list(self.tags),
            "requester": self.requester.as_json(),
            "assignee": self.assignee.as_json() if self.assignee else None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "first_response_at": iso(self.first_response_at),
            "resolved_at": iso(self.resolved_at),
            "closed_at": iso(self.closed_at),
            "version": self.version,
            "merged_into": self.merged_into,
            "messages": self.messages,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class AttachmentView:
    """A file that came with a message."""

    filename: str
    media_type: str
    size: int
    sha256: str
    inline: bool

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MessageView:
    """One entry of a conversation."""

    id: int
    direction: str
    from_addr: str
    to: str
    cc: str
    date: datetime | None
    subject: str
    message_id: str | None
    in_reply_to: str | None
    text: str
    has_html: bool
    threaded_by: str
    attachments: tuple[AttachmentView, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "direction": self.direction,
            "from": self.from_addr,
            "to": self.to,
            "cc": self.cc,
            "date": iso(self.date),
            "subject": self.subject,
            "message_id": self.message_id,
            "in_reply_to": self.in_reply_to,
            "text": self.text,
            "has_html": self.has_html,
            "threaded_by": self.threaded_by,
            "attachments": [a.as_json() for a in self.attachments],
        }


@dataclass(frozen=True)
class EventView:
    """One line of a ticket's history."""

    id: int
    at: datetime
    actor: str | None
    kind: str
    version: int
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "actor": self.actor,
            "kind": self.kind,
            "version": self.version,
            "data": self.data,
        }


@dataclass(frozen=True)
class TicketDetail:
    """A ticket with its conversation, history, flags and links."""

    ticket: TicketSummary
    flag_details: dict[str, str]
    links: tuple[tuple[int, str], ...]
    messages: tuple[MessageView, ...]
    events: tuple[EventView, ...]

    def as_json(self) -> dict[str, Any]:
        """The stable JSON object of ``deskq show --json``."""
        data = self.ticket.as_json()
        data["flags"] = [{"flag": f, "detail": d} for f, d in sorted(self.flag_details.items())]
        data["links"] = [{"ticket": t, "kind": k} for t, k in self.links]
        data["messages"] = [m.as_json() for m in self.messages]
        data["events"] = [e.as_json() for e in self.events]
        return data


# --------------------------------------------------------------------------- queries

REQUESTER = aliased(Person, name="requester")
ASSIGNEE = aliased(Person, name="assignee")


def summary_select() -> Select[Any]:
    count = (
        select(func.count())
        .select_from(Message)
        .where(Message.ticket_id == Ticket.id)
        .correlate(Ticket)
        .scalar_subquery()
    )
    return (
        select(
            Ticket,
            Queue.key,
            REQUESTER.address,
            REQUESTER.display_name,
            ASSIGNEE.address,
            ASSIGNEE.display_name,
            count,
        )
        .join(Queue, Queue.id == Ticket.queue_id)
        .join(REQUESTER, REQUESTER.id == Ticket.requester_id)
        .outerjoin(ASSIGNEE, ASSIGNEE.id == Ticket.assignee_id)
    )


def _labels(
    session: Session, model: type[TicketTag] | type[TicketFlag], column: Any, ids: Sequence[int]
) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    if ids:
        rows = session.execute(
            select(model.ticket_id, column).where(model.ticket_id.in_(ids)).order_by(column)
        )
        for tid, value in rows:
            found.setdefault(tid, []).append(value)
    return found


def summaries(session: Session, rows: Sequence[Any]) -> list[TicketSummary]:
    """TicketSummary objects from rows of :func:`summary_select` (extra columns ignored)."""
    ids = [row[0].id for row in rows]
    tags = _labels(session, TicketTag, TicketTag.tag, ids)
    flags = _labels(session, TicketFlag, TicketFlag.flag, ids)
    out = []
    for t, qkey, raddr, rname, aaddr, aname, count, *_ in rows:
        out.append(
            TicketSummary(
                id=t.id,
                queue=qkey,
                subject=t.subject,
                status=t.status.value,
                priority=t.priority.value,
                category=t.category,
                requester=PersonView(raddr, rname),
                assignee=PersonView(aaddr, aname) if aaddr else None,
                created_at=t.created_at,
                updated_at=t.updated_at,
                first_response_at=t.first_response_at,
                resolved_at=t.resolved_at,
                closed_at=t.closed_at,
                version=t.version,
                merged_into=t.merged_into_id,
                messages=count,
                tags=tuple(tags.get(t.id, ())),
                flags=tuple(flags.get(t.id, ())),
            )
        )
    return out


def parse_statuses(value: str) -> list[Status]:
    """``open,pending`` into statuses; ValueError naming the valid ones."""
    result = []
    for part in value.split(","):
        try:
            result.append(Status(part.strip().lower()))
        except ValueError:
            valid = ", ".join(s.value for s in Status)
            raise ValueError(f"unknown status {part.strip()!r}; use one of {valid}") from None
    return result


def fts_query(words: str) -> str:
    """User words as an FTS5 query: every word must match, quotes neutralised, no operators."""
    tokens = re.findall(r"\w+", words, flags=re.UNICODE)
    return " ".join('"' + t.replace('"', '""') + '"' for t in tokens)


def search_ticket_ids(session: Session, words: str) -> Select[Any]:
    """A select of ticket ids whose messages' subject or body contain all ``words``."""
    if session.get_bind().dialect.name == "sqlite":
        matches = (
            text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :fts")
            .bindparams(fts=fts_query(words) or '""')
            .columns(rowid=Integer)
        )
        return select(Message.ticket_id).where(Message.id.in_(matches)).distinct()
    from store import access

    if not access.is_owner(session):
        # A provider's own role: the indexed search through deskq_search (migration
        # 0008), not a scan of every message under row-level security.
        found = (
            text("SELECT deskq_search(:fts) AS ticket_id")
            .bindparams(fts=words)
            .columns(ticket_id=Integer)
            .subquery()
        )
        return select(found.c.ticket_id)
    return (
        select(Message.ticket_id)
        .where(
            text("messages.search_vector @@ plainto_tsquery('deskq_words', :fts)").bindparams(
                fts=words
            )
        )
        .distinct()
    )


def iter_tickets(
    session: Session,
    *,
    queue: str | None = None,
    statuses: Sequence[Status] = (),
    search: str | None = None,
    batch: int = 1000,
    queue_ids: Sequence[int] | None = None,
) -> Iterator[TicketSummary]:
    """Tickets by ascending id, streamed in keyset-paginated batches (flat memory).

    ``queue_ids``: only tickets of these queues (the viewer's, see store.access).
    """
    after = 0
    while True:
        stmt = summary_select().where(Ticket.id > after)
        if queue_ids is not None:
            stmt = stmt.where(Ticket.queue_id.in_(list(queue_ids)))
        if queue:
            stmt = stmt.where(Queue.key == queue)
        if statuses:
            stmt = stmt.where(Ticket.status.in_(list(statuses)))
        if search:
            stmt = stmt.where(Ticket.id.in_(search_ticket_ids(session, search)))
        rows = session.execute(stmt.order_by(Ticket.id).limit(batch)).all()
        if not rows:
            return
        yield from summaries(session, rows)
        after = rows[-1][0].id
        session.expunge_all()


def ticket_summary(session: Session, ticket_id: int) -> TicketSummary | None:
    """One ticket's queue row, or None."""
    rows = session.execute(summary_select().where(Ticket.id == ticket_id)).all()
    return summaries(session, rows)[0] if rows else None


def ticket_detail(session: Session, ticket_id: int) -> TicketDetail | None:
    """Everything about one ticket, or None if there is no such ticket."""
    summary = ticket_summary(session, ticket_id)
    if summary is None:
        return None
    flags = {
        flag: detail
        for flag, detail in session.execute(
            select(TicketFlag.flag, TicketFlag.detail).where(TicketFlag.ticket_id == ticket_id)
        )
    }
    links = tuple(
        (other, kind)
        for other, kind in session.execute(
            select(TicketLink.other_id, TicketLink.kind)
            .where(TicketLink.ticket_id == ticket_id)
            .order_by(TicketLink.other_id)
        )
    )
    messages = session.scalars(
        select(Message).where(Message.ticket_id == ticket_id).order_by(Message.id)
    ).all()
    attachments: dict[int, list[AttachmentView]] = {}
    for a in session.scalars(
        select(Attachment)
        .where(Attachment.message_id.in_([m.id for m in messages]))
        .order_by(Attachment.id)
    ):
        attachments.setdefault(a.message_id, []).append(
            AttachmentView(a.filename, a.media_type, a.size, a.sha256, a.inline)
        )
    events = session.execute(
        select(Event, Person.address)
        .outerjoin(Person, Person.id == Event.actor_id)
        .where(Event.ticket_id == ticket_id, Event.kind != "viewed")  # views: deskq audit
        .order_by(Event.id)
    ).all()
    return TicketDetail(
        ticket=summary,
        flag_details=flags,
        links=links,
        messages=tuple(
            MessageView(
                id=m.id,
                direction=m.direction.value,
                from_addr=m.from_addr,
                to=m.to_addrs,
                cc=m.cc_addrs,
                date=m.date,
                subject=m.subject,
                message_id=m.message_id,
                in_reply_to=m.in_reply_to,
                text=m.full_text,
                has_html=m.has_html,
                threaded_by=m.threaded_by,
                attachments=tuple(attachments.get(m.id, ())),
            )
            for m in messages
        ),
        events=tuple(
            EventView(e.id, e.at, addr, e.kind, e.version, dict(e.data)) for e, addr in events
        ),
    )
