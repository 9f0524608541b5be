"""Storing incoming mail exactly once: dedupe, route, thread, store, in one transaction.

The sources (IMAP, Maildir) hand over batches of raw emails. :meth:`Ingestor.store_batch`
writes the raw bytes, the tickets, messages, attachments, events and the new sync state
in one transaction; only after it commits does the source mark the mail on the server.
Each message gets its own savepoint, so one that fails for any reason becomes a ticket
flagged ``parse-error`` (raw source kept) instead of stopping the batch.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formataddr, getaddresses
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail.loops import automatic_reasons, is_bounce, own_ticket_header
from mail.parse import ParsedMessage, content_identity, one_line, parse
from store import outbox, services
from store.config import QueueSettings, Settings
from store.db import Database, insert_or_ignore
from store.models import (
    Attachment,
    Blob,
    Direction,
    MailboxState,
    Message,
    Person,
    Queue,
    RawSource,
    Status,
    Ticket,
    TicketFlag,
    utcnow,
)

log = logging.getLogger(__name__)
UNKNOWN_SENDER = "unknown-sender@deskq.invalid"


@dataclass(frozen=True)
class Incoming:
    """One raw email from a source, with where it came from."""

    raw: bytes
    mailbox: str
    folder: str = ""
    uidvalidity: int | None = None
    uid: int | None = None
    # When the mail reached the mailbox (IMAP INTERNALDATE, Maildir delivery time);
    # ticket clocks start here, not when deskq happened to poll.
    received_at: datetime | None = None


@dataclass
class Prepared:
    """An email parsed and hashed, ready to store (made outside the transaction)."""

    item: Incoming
    parsed: ParsedMessage
    identity: str
    sha256: str
    compressed: bytes
    too_large: bool = False


@dataclass
class Outcome:
    """What became of one email."""

    uid: int | None
    disposition: str
    tickets: tuple[int, ...] = ()
    detail: str = ""


def prepare(item: Incoming, max_bytes: int) -> Prepared:
    """Parse, hash and compress one email; never raises. Safe to run in worker processes."""
    raw = item.raw
    too_large = len(raw) > max_bytes
    if too_large:
        parsed = parse(_head_only(raw))
        parsed.text, parsed.html, parsed.attachments = "", None, []
    else:
        parsed = parse(raw)
    return Prepared(
        item=item,
        parsed=parsed,
        identity=content_identity(raw, parsed.message_id),
        sha256=hashlib.sha256(raw).hexdigest(),
        compressed=zlib.compress(raw, 6),
        too_large=too_large,
    )


def _head_only(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    return raw[: end if end >= 0 else 65536][:65536] + b"\r\n\r\n"


def _fmt(addresses: Sequence[tuple[str, str]]) -> str:
    return ", ".join(formataddr(a) for a in addresses)


@dataclass
class _Context:
    """Per-batch caches (queues by key, people by address)."""

    queues: dict[str, Queue] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)


class Ingestor:
    """Turns prepared emails into tickets for one workspace's queues."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.queue_settings = {q.key: q for q in settings.queue}
        self.alias_to_queue = {a: q.key for q in settings.queue for a in q.all_aliases}
        self.tag_patterns = {
            q.key: re.compile(rf"\[\s*{re.escape(q.tag)}\s*#\s*(\d+)\s*\]", re.IGNORECASE)
            for q in settings.queue
        }

    # ------------------------------------------------------------------ batch

    def store_batch(
        self,
        batch: Sequence[Prepared],
        *,
        mailbox: str,
        default_queue: str | None,
        folder: str = "",
        uidvalidity: int | None = None,
        last_uid: int | None = None,
    ) -> list[Outcome]:
        """Store a batch and the mailbox's new sync state in one transaction.

        ``last_uid`` (default: the highest UID in the batch) is recorded as processed,
        which also covers UIDs that vanished between SEARCH and FETCH.
        """
        outcomes: list[Outcome] = []
        with self.db.write() as session:
            ctx = _Context(queues={q.key: q for q in session.scalars(select(Queue))})
            for prepared in batch:
                outcomes.append(self._store_safely(session, ctx, prepared, default_queue))
            uids = [p.item.uid for p in batch if p.item.uid is not None]
            if last_uid is None and uids:
                last_uid = max(uids)
            if uidvalidity is not None and last_uid is not None:
                self._advance(session, mailbox, folder, uidvalidity, last_uid)
        return outcomes

    def _store_safely(
        self, session: Session, ctx: _Context, p: Prepared, default_queue: str | None
    ) -> Outcome:
        try:
            with session.begin_nested():
                return self._store_one(session, ctx, p, default_queue)
        except Exception as exc:
            log.exception("storing message uid=%s failed; keeping it as parse-error", p.item.uid)
            ctx.people.clear()
            p.parsed.fatal = f"deskq could not store this message: {type(exc).__name__}: {exc}"
            with session.begin_nested():
                return self._store_one(session, ctx, p, default_queue)

    def _advance(
        self, session: Session, mailbox: str, folder: str, uidvalidity: int, uid: int
    ) -> None:
        state = session.get(MailboxState, (mailbox, folder))
        if state is None:
            session.add(
                MailboxState(mailbox=mailbox, folder=folder, uidvalidity=uidvalidity, last_uid=uid)
            )
        else:
            if state.uidvalidity != uidvalidity:
                state.uidvalidity, state.last_uid = uidvalidity, 0
            state.last_uid = max(state.last_uid, uid)
            state.updated_at = utcnow()

    # ------------------------------------------------------------------ one message

    def _store_one(
        self, session: Session, ctx: _Context, p: Prepared, default_queue: str | None
    ) -> Outcome:
        item, parsed = p.item, p.parsed
        raw_values: dict[str, Any] = {
            "identity": p.identity,
            "sha256": p.sha256,
            "size": len(item.raw),
            "compression": "zlib",
            "data": p.compressed,
            "mailbox": item.mailbox,
            "folder": item.folder,
            "uidvalidity": item.uidvalidity,
            "uid": item.uid,
            "received_at": _arrival(item),
            "disposition": "ticket",
        }
        if not insert_or_ignore(session, RawSource, raw_values, "identity"):
            raw_id = session.scalar(select(RawSource.id).where(RawSource.identity == p.identity))
            known = session.scalars(select(Message.ticket_id).where(Message.raw_id == raw_id))
            return Outcome(item.uid, "duplicate", tuple(sorted(set(known))))
        raw = session.scalar(select(RawSource).where(RawSource.identity == p.identity))
        assert raw is not None
        if parsed.fatal is None and self._is_own_mail(session, parsed):
            raw.disposition = "own-mail"
            return Outcome(item.uid, "own-mail", detail="deskq's own outgoing mail")
        queues = self._route(parsed, default_queue)
        tickets: list[int] = []
        created: list[int] = []
        how = ""
        for key in queues:
            tid, how, new = self._deliver(session, ctx, p, raw.id, key)
            tickets.append(tid)
            if new:
                created.append(tid)
        if len(created) > 1 or (created and len(tickets) > 1):
            for other in tickets:
                if other != created[0]:
                    _link_quietly(session, created[0], other, "same-email")
        disposition = "parse-error" if parsed.fatal else ("new-ticket" if created else "threaded")
        raw.disposition = disposition
        return Outcome(item.uid, disposition, tuple(tickets), how)

    def _is_own_mail(self, session: Session, parsed: ParsedMessage) -> bool:
        if own_ticket_header(parsed):
            return True
        if parsed.message_id is None:
            return False
        return (
            session.scalar(
                select(Message.id)
                .where(
                    Message.message_id == parsed.message_id,
                    Message.direction == Direction.OUTBOUND,
                )
                .limit(1)
            )
            is not None
        )

    def _route(self, parsed: ParsedMessage, default_queue: str | None) -> list[str]:
        """Queues this email is for, most trusted recipient header first."""
        candidates = [
            *parsed.delivered_to,
            *parsed.x_original_to,
            *(a for _, a in parsed.to),
            *(a for _, a in parsed.cc),
        ]
        keys: list[str] = []
        for address in candidates:
            key = self.alias_to_queue.get(address)
            if key and key not in keys:
                keys.append(key)
        return keys or [default_queue or self.settings.queue[0].key]

    def _person(self, session: Session, ctx: _Context, address: str, name: str) -> Person:
        person = ctx.people.get(address)
        if person is None:
            person = services.get_or_create_person(session, address, name)
            ctx.people[address] = person
        return person

    def _deliver(
        self, session: Session, ctx: _Context, p: Prepared, raw_id: int, key: str
    ) -> tuple[int, str, bool]:
        """Put the email into queue ``key``: join a ticket or open one. (id, how, is_new)."""
        parsed = p.parsed
        qs = self.queue_settings[key]
        queue = ctx.queues[key]
        sender = self._person(session, ctx, parsed.from_addr or UNKNOWN_SENDER, parsed.from_name)
        message = Message(
            direction=Direction.INBOUND,
            message_id=parsed.message_id,
            in_reply_to=" ".join(parsed.in_reply_to) or None,
            references=" ".join(parsed.references) or None,
            author_id=sender.id,
            from_addr=formataddr((parsed.from_name, parsed.from_addr)) if parsed.from_addr else "",
            to_addrs=_fmt(parsed.to),
            cc_addrs=_fmt(parsed.cc),
            subject=parsed.subject,
            date=parsed.date,
            text_body=parsed.text,
            html_body=parsed.html,
            raw_id=raw_id,
        )
        automatic = automatic_reasons(parsed)
        found = None if parsed.fatal else self._thread(session, queue, qs, parsed)
        linked_to: int | None = None
        if found is not None:
            ticket_id, how = found
            if how.startswith("!"):
                linked_to, how = ticket_id, how[1:]
            else:
                message.threaded_by = how
                self._join(session, ticket_id, message, parsed, sender, automatic, p)
                return ticket_id, how, False
        message.threaded_by = how if linked_to else "new ticket"
        arrived = _arrival(p.item)
        ticket = services.open_ticket(
            session,
            queue=queue,
            requester=sender,
            subject=parsed.subject or "(no subject)",
            data={"mailbox": p.item.mailbox, "via": key},
            at=arrived,
        )
        message.created_at = arrived
        message.ticket_id = ticket.id
        session.add(message)
        session.flush()
        self._attachments(session, message.id, parsed)
        services.record_event(
            session,
            ticket,
            "message",
            None,
            {"message": message.id, "from": parsed.from_addr, "threaded_by": message.threaded_by},
            at=arrived,
        )
        quarantined = self._flag_new(session, ticket.id, p, qs, automatic)
        if qs.auto_ack and not (automatic or quarantined or parsed.fatal or p.too_large):
            self._auto_ack(session, ticket, queue, qs, p, message)
        if linked_to is not None:
            _link_quietly(session, ticket.id, linked_to, "related")
        return ticket.id, message.threaded_by, True

    def _join(
        self,
        session: Session,
        ticket_id: int,
        message: Message,
        parsed: ParsedMessage,
        sender: Person,
        automatic: list[str],
        p: Prepared,
    ) -> None:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        status: Status | None = None
        reason = ""
        if not automatic and not sender.is_provider:
            if ticket.status == Status.RESOLVED:
                status, reason = Status.OPEN, "reply after resolution"
            elif ticket.status == Status.PENDING:
                status, reason = Status.OPEN, "requester replied"
        # Keep each ticket's history in order even when a backlog arrives late.
        arrived = max(_arrival(p.item), ticket.updated_at)
        message.created_at = arrived
        services.record_arrival(
            session,
            ticket_id,
            message,
            {"from": parsed.from_addr, "threaded_by": message.threaded_by},
            status=status,
            reason=reason,
            at=arrived,
        )
        self._attachments(session, message.id, parsed)
        if p.too_large:
            _flag(session, ticket_id, "too-large", _too_large_detail(p))

    # ------------------------------------------------------------------ threading

    def _thread(
        self, session: Session, queue: Queue, qs: QueueSettings, parsed: ParsedMessage
    ) -> tuple[int, str] | None:
        """(ticket id, rule) if the email belongs to a ticket of this queue.

        A rule starting with "!" means: do not join, open a new ticket linked to it.
        """
        ordered = [("In-Reply-To", m) for m in parsed.in_reply_to] + [
            ("References", m) for m in reversed(parsed.references)
        ]
        ordered += [("bounce of", m) for m in parsed.report_message_ids]
        ids = [m for _, m in ordered]
        if ids:
            rows = session.execute(
                select(Message.message_id, Message.ticket_id)
                .join(Ticket, Ticket.id == Message.ticket_id)
                .where(Message.message_id.in_(ids), Ticket.queue_id == queue.id)
            ).all()
            where = {mid: tid for mid, tid in rows}
            for header, mid in ordered:
                if mid in where:
                    return self._live(session, where[mid], f"{header} {mid}")
        match = self.tag_patterns[qs.key].search(parsed.subject)
        if match:
            number = int(match.group(1))
            ticket = session.get(Ticket, number)
            if ticket is not None and ticket.queue_id == queue.id:
                tag = f"[{qs.tag} #{number}]"
                if self._participant(session, ticket, parsed.from_addr):
                    return self._live(session, number, f"subject tag {tag} from a participant")
                return number, f"!new ticket: subject tag {tag} but the sender is not a participant"
        return None

    def _live(self, session: Session, ticket_id: int, how: str) -> tuple[int, str]:
        """Follow merges; a closed ticket is not reopened: a follow-up is linked to it."""
        seen = {ticket_id}
        ticket = session.get(Ticket, ticket_id)
        while ticket is not None and ticket.merged_into_id and ticket.merged_into_id not in seen:
            seen.add(ticket.merged_into_id)
            how += f" (merged into #{ticket.merged_into_id})"
            ticket = session.get(Ticket, ticket.merged_into_id)
        assert ticket is not None
        if ticket.status == Status.CLOSED:
            return ticket.id, f"!follow-up of closed #{ticket.id} ({how})"
        return ticket.id, how

    def _participant(self, session: Session, ticket: Ticket, address: str) -> bool:
        """The requester, a provider, or anyone already on the conversation."""
        person = session.scalar(select(Person).where(Person.address == address))
        if person is None or address == UNKNOWN_SENDER:
            return False
        if person.is_provider or person.id == ticket.requester_id:
            return True
        rows = session.execute(
            select(Message.from_addr, Message.to_addrs, Message.cc_addrs).where(
                Message.ticket_id == ticket.id
            )
        ).all()
        return any(
            address == a.lower() for row in rows for _, a in getaddresses([v for v in row if v])
        )

    def _auto_ack(
        self,
        session: Session,
        ticket: Ticket,
        queue: Queue,
        qs: QueueSettings,
        p: Prepared,
        message: Message,
    ) -> None:
        """Queue the acknowledgement of a new ticket, within the per-sender hourly limit."""
        from mail.outgoing import queue_automatic_reply

        parsed = p.parsed
        if outbox.recent_count(session, parsed.from_addr, "auto-ack") >= qs.auto_ack_per_hour:
            log.info(
                "not acknowledging %s: %d per hour reached", parsed.from_addr, qs.auto_ack_per_hour
            )
            return
        queue_automatic_reply(
            session, self.settings, ticket, queue, qs, message, parsed.from_name, parsed.from_addr
        )

    # ------------------------------------------------------------------ pieces

    def _attachments(self, session: Session, message_id: int, parsed: ParsedMessage) -> None:
        for part in parsed.attachments:
            digest = hashlib.sha256(part.data).hexdigest()
            insert_or_ignore(
                session,
                Blob,
                {
                    "sha256": digest,
                    "size": len(part.data),
                    "compression": "zlib",
                    "data": zlib.compress(part.data, 6),
                },
                "sha256",
            )
            session.add(
                Attachment(
                    message_id=message_id,
                    filename=part.filename,
                    media_type=part.media_type,
                    size=len(part.data),
                    sha256=digest,
                    content_id=part.content_id,
                    inline=part.inline,
                )
            )

    def _flag_new(
        self,
        session: Session,
        ticket_id: int,
        p: Prepared,
        qs: QueueSettings,
        automatic: list[str],
    ) -> bool:
        """Flag what a provider should know about a new ticket; True if quarantined."""
        parsed = p.parsed
        if parsed.fatal:
            _flag(
                session,
                ticket_id,
                "parse-error",
                f"{parsed.fatal}. The raw source is kept; see it with deskq show --json.",
            )
        if p.too_large:
            _flag(session, ticket_id, "too-large", _too_large_detail(p))
        if is_bounce(parsed):
            _flag(session, ticket_id, "bounce", "; ".join(automatic))
        elif automatic:
            _flag(session, ticket_id, "automatic", "; ".join(automatic))
        domain = parsed.from_addr.rsplit("@", 1)[-1]
        if qs.allowed_domains and domain not in {d.lower() for d in qs.allowed_domains}:
            _flag(
                session,
                ticket_id,
                "quarantined",
                f"sender domain {domain or '(none)'} is not in queue {qs.key}'s allowed_domains; "
                "release it with deskq release ID",
            )
            return True
        return False


def _arrival(item: Incoming) -> datetime:
    """When the mail arrived: the source's time if plausible, else now."""
    now = utcnow()
    when = item.received_at
    if when is None:
        return now
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return min(when, now)


def _too_large_detail(p: Prepared) -> str:
    return (
        f"message of {len(p.item.raw) / 1e6:.1f} MB exceeds [ingest] max_message_bytes; "
        "only its headers were read, the raw source is kept"
    )


def _flag(session: Session, ticket_id: int, flag: str, detail: str) -> None:
    if session.get(TicketFlag, (ticket_id, flag)) is None:
        session.add(TicketFlag(ticket_id=ticket_id, flag=flag, detail=one_line(detail)[:2000]))
        session.flush()


def _link_quietly(session: Session, a: int, b: int, kind: str) -> None:
    """Link two tickets during ingestion (an event on each, versions left to arrivals)."""
    from store.models import TicketLink

    if a == b or session.get(TicketLink, (a, b)) is not None:
        return
    session.add_all(
        [
            TicketLink(ticket_id=a, other_id=b, kind=kind),
            TicketLink(ticket_id=b, other_id=a, kind=kind),
        ]
    )
    for this, other in ((a, b), (b, a)):
        ticket = session.get(Ticket, this)
        assert ticket is not None
        services.record_event(session, ticket, "link", None, {"other": other, "kind": kind})
    session.flush()
