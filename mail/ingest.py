"""Storing incoming mail exactly once: dedupe, route, thread, store, in one transaction.

The sources (IMAP, Maildir) hand over batches of raw emails. :meth:`Ingestor.store_batch`
writes the raw bytes, the tickets, messages, attachments, events and the new sync state
in one transaction; only after it commits does the source mark the mail on the server.
Each message gets its own savepoint, so one that fails for any reason becomes a ticket
flagged ``parse-error`` (raw source kept) instead of stopping the batch.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import (
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session

from mail.batch import Batch, SetupError
from mail.loops import automatic_reasons, is_bounce
from mail.parse import ParsedMessage, clean_text
from mail.prepare import Incoming, Prepared
from store import outbox, services
from store.config import Settings
from store.db import Database
from store.leases import Lease, LeaseLost, fence
from store.models import Direction, MailboxState, Message, RawSource, Ticket, utcnow

log = logging.getLogger(__name__)
# Failures that say nothing about the email being stored: raised, never turned into a
# parse-error ticket. (DataError and IntegrityError can come from an email's content.)
NOT_THE_MAIL = (
    OperationalError,
    InterfaceError,
    InternalError,
    ProgrammingError,
    SetupError,
    LeaseLost,
)
# ...except these SQLSTATE classes, which an email's content causes: 54, "program limit
# exceeded" (an index entry or search vector too large), which psycopg reports as an
# OperationalError. Retrying would fail the same way, forever.
_CONTENT_SQLSTATES = ("54",)


def not_the_mail(exc: BaseException) -> bool:
    """Whether a failure to store says nothing about the email (the batch is retried)."""
    if not isinstance(exc, NOT_THE_MAIL):
        return False
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return not (isinstance(sqlstate, str) and sqlstate.startswith(_CONTENT_SQLSTATES))


@dataclass
class Outcome:
    """What became of one email."""

    uid: int | None
    disposition: str
    tickets: tuple[int, ...] = ()
    detail: str = ""


class Ingestor:
    """Turns prepared emails into tickets for one workspace's queues."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        # Set while a poller holds the mailbox's lease: every batch checks it's still ours.
        self.lease: Lease | None = None
        self.queue_settings = {q.key: q for q in settings.queue}
        self.alias_to_queue = {a: q.key for q in settings.queue for a in q.all_aliases}
        self.tag_patterns = {
            q.key: re.compile(rf"\[\s*{re.escape(q.tag)}\s*#\s*(\d+)\s*\]", re.IGNORECASE)
            for q in settings.queue
        }

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
        which also covers UIDs that vanished between SEARCH and FETCH. If the batch
        cannot be stored as a whole, each message is retried on its own, and one that
        still fails is stored as a ``parse-error`` ticket with its raw source.
        """
        with self.db.write() as session:
            if self.lease is not None:
                fence(session, self.lease)  # first: on PostgreSQL it locks the lease row
            try:
                with session.begin_nested():
                    outcomes = Batch(self, session, default_queue).run(batch)
            except Exception as exc:
                if not_the_mail(exc):
                    raise  # the database or the setup, not the mail: retried later
                log.exception("mailbox %s: batch failed; storing its messages one by one", mailbox)
                outcomes = [self._store_alone(session, p, default_queue) for p in batch]
            self._settle_stand_ins(session, batch, outcomes)
            uids = [p.item.uid for p in batch if p.item.uid is not None]
            if last_uid is None and uids:
                last_uid = max(uids)
            if uidvalidity is not None and last_uid is not None:
                self._advance(session, mailbox, folder, uidvalidity, last_uid)
        return outcomes

    def _store_alone(self, session: Session, p: Prepared, default_queue: str | None) -> Outcome:
        """One message on its own; if it still fails, a parse-error ticket with only its
        raw source, sender and subject (nothing else of its content can break the write)."""
        try:
            with session.begin_nested():
                return Batch(self, session, default_queue).run([p])[0]
        except Exception as exc:
            if not_the_mail(exc):
                raise
            log.exception(
                "message uid=%s could not be stored; keeping it as parse-error", p.item.uid
            )
            bare = ParsedMessage(
                subject=clean_text(p.parsed.subject)[:500],
                from_name=clean_text(p.parsed.from_name)[:200],
                from_addr=clean_text(p.parsed.from_addr)[:320],
                fatal=f"deskq could not store this message: {type(exc).__name__}: {exc}"[:1000],
            )
            p = dataclasses.replace(p, parsed=bare, too_large=False, text_more=None)
            with session.begin_nested():
                return Batch(self, session, default_queue).run([p])[0]

    def _settle_stand_ins(
        self, session: Session, batch: Sequence[Prepared], outcomes: Sequence[Outcome]
    ) -> None:
        """Stand-ins stored by earlier attempts for emails of this batch: their tickets
        are linked to the emails' and resolved (store.services.settle_stand_in)."""
        wanted: dict[str, tuple[Prepared, Outcome]] = {
            p.item.stand_in: (p, outcome)
            for p, outcome in zip(batch, outcomes, strict=True)
            if p.item.stand_in is not None and not p.item.unreadable
        }
        if not wanted:
            return
        found = session.execute(
            select(Message.message_id, Message.ticket_id).where(
                Message.message_id.in_(list(wanted)), Message.direction == Direction.INBOUND
            )
        ).all()
        for found_id, ticket_id in sorted(found, key=lambda row: row[1]):
            stand_in_id = str(found_id)
            p, outcome = wanted[stand_in_id]
            stored_in = list(outcome.tickets)
            if not stored_in:  # stored before (a duplicate): wherever that copy went
                stored_in = list(
                    session.scalars(
                        select(Message.ticket_id)
                        .join(RawSource, RawSource.id == Message.raw_id)
                        .where(RawSource.identity == p.identity)
                    )
                )
            try:
                with session.begin_nested():
                    services.settle_stand_in(session, ticket_id, stand_in_id, stored_in)
            except Exception as exc:
                if not_the_mail(exc):
                    raise
                # The email is stored; only its stand-in stays as it was.
                log.exception("ticket #%s: could not settle this stand-in", ticket_id)

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

    def route(self, parsed: ParsedMessage, default_queue: str) -> list[str]:
        """Queues this email is for, most trusted recipient header first."""
        return self.addressed_queues(parsed) or [default_queue]

    def addressed_queues(self, parsed: ParsedMessage) -> list[str]:
        """Queues whose aliases this email names, most trusted recipient header first."""
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
        return keys

    def flags_for(self, p: Prepared, queue_key: str, is_new: bool) -> list[tuple[str, str]]:
        """Flags (name, detail) a provider should see on the ticket this email lands in."""
        parsed, flags = p.parsed, []
        if p.too_large:
            flags.append(("too-large", _too_large_detail(p)))
        if not is_new:
            return flags
        if p.item.unreadable:
            flags.append(("unreadable", p.item.unreadable))
        elif parsed.fatal:
            flags.append(("parse-error", f"{parsed.fatal}. The raw source is kept."))
        automatic = automatic_reasons(parsed)
        if is_bounce(parsed):
            flags.append(("bounce", "; ".join(automatic)))
        elif automatic:
            flags.append(("automatic", "; ".join(automatic)))
        qs = self.queue_settings[queue_key]
        domain = parsed.from_addr.rsplit("@", 1)[-1] if parsed.from_addr else ""
        if qs.allowed_domains and domain not in {d.lower() for d in qs.allowed_domains}:
            flags.append(
                (
                    "quarantined",
                    f"sender domain {domain or '(none)'} is not in queue {qs.key}'s "
                    "allowed_domains; release it with deskq release ID",
                )
            )
        return flags

    def maybe_acknowledge(self, session: Session, delivery: Any) -> None:
        """Queue the acknowledgement of a new ticket when its queue wants one and it is safe."""
        from mail.outgoing import queue_automatic_reply

        p: Prepared = delivery.prepared
        parsed = p.parsed
        qs = self.queue_settings[delivery.queue.key]
        if not qs.auto_ack or parsed.fatal or p.too_large or automatic_reasons(parsed):
            return
        if any(f == "quarantined" for f, _ in self.flags_for(p, qs.key, True)):
            return
        if outbox.recent_count(session, parsed.from_addr, "auto-ack") >= qs.auto_ack_per_hour:
            log.info(
                "not acknowledging %s: %d per hour reached", parsed.from_addr, qs.auto_ack_per_hour
            )
            return
        ticket = session.get(Ticket, delivery.ticket.id)
        answered = session.get(Message, delivery.message_id)
        assert ticket is not None and answered is not None
        queue_automatic_reply(
            session,
            self.settings,
            ticket,
            delivery.queue,
            qs,
            answered,
            parsed.from_name,
            parsed.from_addr,
        )


def arrival(item: Incoming) -> datetime:
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
