"""Writing a batch of emails in a handful of set-based statements.

Ingesting thousands of messages a second rules out one ORM flush per row. A batch is
stored in three phases: read everything needed to decide (known identities, our own
Message-IDs, referenced messages, tickets, people), decide every email's fate in
Python (duplicate, own mail, join ticket T, open a new ticket), then write rows
table by table with multi-row INSERTs. Replies to messages of the same batch thread
too: decisions are taken in order and see the new tickets decided before them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from mail.feedback import parse_rating
from mail.loops import automatic_reasons
from mail.parse import content_identity, display_address, display_addresses, one_line
from store import clocks, codec
from store.bulk import insert_rows
from store.models import (
    Attachment,
    Blob,
    Direction,
    Event,
    KnownCopy,
    Message,
    Person,
    Priority,
    Queue,
    RawSource,
    Status,
    Ticket,
    TicketFlag,
    TicketLink,
    utcnow,
)

if TYPE_CHECKING:
    from mail.ingest import Ingestor, Outcome
    from mail.prepare import Prepared

UNKNOWN_SENDER = "unknown-sender@deskq.invalid"
TICKETS = cast(Table, Ticket.__table__)
MESSAGES = cast(Table, Message.__table__)
RAWS = cast(Table, RawSource.__table__)
EVENTS = cast(Table, Event.__table__)
FLAGS = cast(Table, TicketFlag.__table__)
ATTACHMENTS = cast(Table, Attachment.__table__)
LINKS = cast(Table, TicketLink.__table__)
_CHUNK = 400  # bound on IN (...) lists and multi-row INSERTs


class SetupError(RuntimeError):
    """The database does not match the config: not the fault of any email."""


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _fmt(addresses: Sequence[tuple[str, str]]) -> str:
    return display_addresses(addresses)


def _insert_skipping(session: Session, model: Any, key: str | None) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING, on either backend (safe against any race).

    ``key`` None: whatever conflicts (the primary key, say) is skipped.
    """
    if session.get_bind().dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
    return dialect_insert(model).on_conflict_do_nothing(index_elements=[key] if key else None)


def _queue_list(ids: Iterable[int]) -> str:
    return " ".join(map(str, sorted(ids)))


def _insert_ignore(
    session: Session, model: Any, rows: list[dict[str, Any]], key: str | None
) -> None:
    """Multi-row INSERT that skips rows whose ``key`` (None: any key) exists."""
    for part in _chunks(rows):
        session.execute(_insert_skipping(session, model, key), part)


@dataclass
class _TicketState:
    """A ticket as this batch sees it (existing, locked; or about to be created)."""

    id: int | None
    queue_id: int
    status: Status
    version: int
    requester_id: int
    merged_into_id: int | None = None
    updated_at: datetime | None = None
    new_index: int | None = None  # position in _Batch.new_tickets
    created_at: datetime | None = None
    changed: bool = False
    resolved_cleared: bool = False


@dataclass
class _Delivery:
    """One email into one queue."""

    prepared: Prepared
    queue: Queue
    sender_id: int
    ticket: _TicketState
    how: str
    is_new: bool
    link_to: list[tuple[_TicketState, str]] = field(default_factory=list)
    status_events: list[dict[str, Any]] = field(default_factory=list)
    other_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    version: int = 1
    message_row: dict[str, Any] = field(default_factory=dict)
    message_id: int | None = None


class Batch:
    """Stores one batch of prepared emails inside the caller's transaction."""

    def __init__(self, ingestor: Ingestor, session: Session, default_queue: str | None) -> None:
        self.ing, self.session = ingestor, session
        self.default_queue = default_queue or ingestor.settings.queue[0].key
        self.queues = {q.key: q for q in session.scalars(select(Queue))}
        missing = [k for k in ingestor.queue_settings if k not in self.queues]
        if missing:
            raise SetupError(
                f"queue(s) {', '.join(missing)} are configured but not in the database; "
                "restart deskq so it can set them up"
            )
        self.tickets: dict[int, _TicketState] = {}
        self.new_tickets: list[_TicketState] = []
        self.people: dict[str, tuple[int, bool]] = {}
        self.batch_ids: dict[tuple[str, int], _TicketState] = {}
        self.deliveries: list[_Delivery] = []
        # raw source id -> ids of the queues its email reached (raw_sources.queues)
        self.reached: dict[int, set[int]] = {}
        self.reached_changed: set[int] = set()
        # stored email that copies in this batch belong to: what it reached (None: not
        # recorded), and the tickets its messages are in
        self.recorded: dict[int, set[int] | None] = {}
        self.holders: dict[int, set[int]] = {}
        self.touched: set[int] = set()  # tickets whose events this batch appended
        self.now = utcnow()
        self.conn = session.connection()
        # SQLite: one writer at a time, so ids can be chosen here (see _insert_with_ids).
        self.sqlite = self.conn.dialect.name == "sqlite"

    # ------------------------------------------------------------------ phase 1: read

    def run(self, batch: Sequence[Prepared]) -> list[Outcome]:
        """Decide and write everything; returns one outcome per email, in order."""
        from mail.ingest import Outcome, arrival

        fresh, outcomes, copies = self._dedupe(batch)
        # Claim every email first: one another process stored meanwhile is dropped
        # before any decision about it can touch a ticket.
        inserted = self._insert_raws([self._raw_row(p, "ticket") for p in fresh])
        claimed, beaten = [], []
        for p in fresh:
            if p.identity in inserted:
                claimed.append(p)
            else:
                outcomes[id(p)] = Outcome(p.item.uid, "duplicate")
                beaten.append(p)
        # Stored by another process meanwhile (it committed: the claim waited for it).
        elsewhere = self._copies_stored_elsewhere(beaten)
        copies += elsewhere
        stored_as = {**{p.identity: rid for p, rid in elsewhere}, **inserted}
        copies = [(p, rid if rid is not None else stored_as.get(p.identity)) for p, rid in copies]
        # Copies of stored email that name a queue: they may be owed a ticket there.
        addressed = [
            (p, rid)
            for p, rid in copies
            if p.parsed.fatal is None and self.ing.addressed_queues(p.parsed)
        ]
        own = self._own_message_ids(
            [*(p for p in claimed if p.parsed.fatal is None), *(p for p, _ in addressed)]
        )
        self._load_people([*claimed, *(p for p, _ in addressed)])
        # Locks in one order in every process: the copies' raw sources (by id), then
        # all tickets (by id, with those the copies' emails are in).
        ours = set(inserted.values())  # rows this batch inserted: locked already
        holders = self._lock_reached(
            [rid for _, rid in addressed if rid is not None and rid not in ours]
        )
        self._prefetch_threads([*claimed, *(p for p, _ in addressed)], holders)
        dispositions: list[dict[str, Any]] = []
        for p in claimed:
            parsed = p.parsed
            if parsed.fatal is None and parsed.message_id in own:
                disposition, deliveries = "own-mail", []
            else:
                deliveries = self._decide(p, arrival(p.item))
                new = any(d.is_new for d in deliveries)
                disposition = "parse-error" if parsed.fatal else "new-ticket" if new else "threaded"
            for d in deliveries:
                d.message_row["raw_id"] = inserted[p.identity]
                self.deliveries.append(d)
            outcomes[id(p)] = Outcome(p.item.uid, disposition)
            dispositions.append({"rid": inserted[p.identity], "disp": disposition})
            self.reached[inserted[p.identity]] = {d.queue.id for d in deliveries}
        for p, raw_id in addressed:
            # A copy of a stored email may name a queue the first copy did not (a Bcc
            # seen only in each copy's Delivered-To): one ticket in each queue.
            # (deskq's own mail never makes a ticket, whichever copy it is.)
            if p.parsed.message_id in own or raw_id is None:
                continue
            if self._deliver_copy(p, raw_id, arrival(p.item)):
                outcomes[id(p)] = Outcome(p.item.uid, "new-ticket")
        self._record_copies(copies)
        for row in dispositions:
            row["queues"] = _queue_list(self.reached.pop(row["rid"]))
        if dispositions:
            self.conn.execute(
                update(RAWS)
                .where(RAWS.c.id == bindparam("rid"))
                .values(disposition=bindparam("disp"), queues=bindparam("queues")),
                dispositions,
            )
        reached = [
            {"rid": rid, "queues": _queue_list(self.reached[rid])}
            for rid in sorted(self.reached_changed & set(self.reached))
        ]
        if reached:
            self.conn.execute(
                update(RAWS)
                .where(RAWS.c.id == bindparam("rid"))
                .values(queues=bindparam("queues")),
                reached,
            )
        self._write()
        by_email: dict[int, list[_Delivery]] = {}
        for d in self.deliveries:
            by_email.setdefault(id(d.prepared), []).append(d)
        result = []
        for p in batch:
            outcome = outcomes[id(p)]
            if outcome.disposition in ("new-ticket", "threaded", "parse-error"):
                ds = by_email.get(id(p), [])
                outcome.tickets = tuple(d.ticket.id for d in ds if d.ticket.id is not None)
                outcome.detail = "; ".join(d.how for d in ds)
            result.append(outcome)
        return result

    def _dedupe(
        self, batch: Sequence[Prepared]
    ) -> tuple[list[Prepared], dict[int, Outcome], list[tuple[Prepared, int | None]]]:
        """The emails not stored yet; the outcomes of the others ("duplicate"); and
        those others with their stored raw source's id (None: stored by this batch)."""
        from mail.ingest import Outcome

        identities = list({p.identity for p in batch} | {p.legacy_identity for p in batch} - {None})
        known: dict[str, int] = {}
        for part in _chunks(identities):
            for identity, raw_id in self.session.execute(
                select(RawSource.identity, RawSource.id).where(RawSource.identity.in_(part))
            ):
                known[identity] = raw_id
        tickets_of: dict[int, set[int]] = {}
        if known:
            for part in _chunks(list(known.values())):
                for rid, tid in self.session.execute(
                    select(Message.raw_id, Message.ticket_id).where(Message.raw_id.in_(part))
                ):
                    tickets_of.setdefault(rid or 0, set()).add(tid)
        fresh: list[Prepared] = []
        outcomes: dict[int, Outcome] = {}
        copies: list[tuple[Prepared, int | None]] = []
        seen: set[str] = set()
        for p in batch:
            stored = known.get(p.identity)
            if stored is None and p.legacy_identity in known:
                stored = self._same_email_stored_before(p, known[p.legacy_identity])
            if stored is not None or p.identity in seen:
                tids = tickets_of.get(stored or -1, set())
                outcomes[id(p)] = Outcome(p.item.uid, "duplicate", tuple(sorted(tids)))
                copies.append((p, stored))
            else:
                seen.add(p.identity)
                fresh.append(p)
        return fresh, outcomes, copies

    def _same_email_stored_before(self, p: Prepared, raw_id: int) -> int | None:
        """``raw_id`` if that raw source, stored under the identity deskq gave email
        with neither Message-ID nor Date before it hashed the first Received, is this
        very email (a rescan), not an earlier one of a device's identical alerts."""
        row = self.session.execute(
            select(RawSource.compression, RawSource.data).where(RawSource.id == raw_id)
        ).one()
        try:
            same = content_identity(codec.inflate(row[0], row[1] or b""), None) == p.identity
        except codec.DAMAGED:
            same = False
        return raw_id if same else None

    def _copies_stored_elsewhere(
        self, beaten: Sequence[Prepared]
    ) -> list[tuple[Prepared, int | None]]:
        ids: dict[str, int] = {}
        for part in _chunks(sorted({p.identity for p in beaten})):
            for identity, raw_id in self.session.execute(
                select(RawSource.identity, RawSource.id).where(RawSource.identity.in_(part))
            ):
                ids[identity] = raw_id
        return [(p, ids[p.identity]) for p in beaten if p.identity in ids]

    def _record_copies(self, copies: list[tuple[Prepared, int | None]]) -> None:
        """Copies from an IMAP folder, kept so that their after-action can be finished
        by the next connection if this pass is cut short (see ImapSource._stored)."""
        rows = {}
        for p, raw_id in copies:
            item, rid = p.item, raw_id
            if item.uid is None or item.uidvalidity is None or rid is None or item.unreadable:
                continue
            key = (item.mailbox, item.folder, item.uidvalidity, item.uid)
            rows[key] = dict(zip(("mailbox", "folder", "uidvalidity", "uid"), key, strict=True))
            rows[key] |= {"raw_id": rid, "created_at": self.now}
        if rows:
            _insert_ignore(self.session, KnownCopy, list(rows.values()), None)

    def _lock_reached(self, raw_ids: Sequence[int]) -> set[int]:
        """Lock the raw sources of stored email that copies belong to (two pollers with
        copies of one email must not both deliver them), read the queues each reached
        and the tickets its messages are in; returns those tickets' ids."""
        ids = sorted(set(raw_ids))
        for part in _chunks(ids):
            for rid, queues in self.session.execute(
                select(RawSource.id, RawSource.queues)
                .where(RawSource.id.in_(part))
                .order_by(RawSource.id)
                # FOR NO KEY UPDATE: still one poller at a time per email, while the
                # key checks of inserts that refer to the row (known_copies) go on.
                .with_for_update(key_share=True)
            ):
                self.recorded[rid] = None if queues is None else {int(q) for q in queues.split()}
            for held_by, tid in self.session.execute(
                select(Message.raw_id, Message.ticket_id).where(Message.raw_id.in_(part))
            ):
                self.holders.setdefault(held_by or 0, set()).add(tid)
        return {t for ts in self.holders.values() for t in ts}

    def _deliver_copy(self, p: Prepared, raw_id: int, arrived: datetime) -> bool:
        """Deliver a copy of a stored email into the queues it names that the email has
        not reached yet, linked to its tickets; True if it went anywhere."""
        if raw_id not in self.reached:
            recorded = self.recorded.get(raw_id)
            if recorded is None:  # stored before deskq kept this: nothing is known
                return False
            self.reached[raw_id] = set(recorded)
        reached = self.reached[raw_id]
        keys = [k for k in self.ing.addressed_queues(p.parsed) if self.queues[k].id not in reached]
        if not keys:
            return False
        holding = {  # the tickets with the email now, by state object
            id(d.ticket): d.ticket for d in self.deliveries if d.message_row.get("raw_id") == raw_id
        }
        for tid in self.holders.get(raw_id, ()):
            if tid in self.tickets:
                holding[id(self.tickets[tid])] = self.tickets[tid]
        deliveries = self._decide(p, arrived, keys)
        for d in deliveries:
            d.message_row["raw_id"] = raw_id
            if d.is_new:
                d.link_to += [(state, "same-email") for state in holding.values()]
            self.deliveries.append(d)
            reached.add(d.queue.id)
        self.reached_changed.add(raw_id)
        return True

    def _own_message_ids(self, batch: Sequence[Prepared]) -> set[str]:
        ids = [p.parsed.message_id for p in batch if p.parsed.message_id]
        own: set[str] = set()
        for part in _chunks(ids):
            own.update(
                self.session.scalars(
                    select(Message.message_id).where(
                        Message.message_id.in_(part), Message.direction == Direction.OUTBOUND
                    )
                )
            )
        return own

    def _load_people(self, batch: Sequence[Prepared]) -> None:
        wanted: dict[str, str] = {}
        for p in batch:
            wanted.setdefault(p.parsed.from_addr or UNKNOWN_SENDER, p.parsed.from_name)
        self._read_people(list(wanted))
        missing = sorted(a for a in wanted if a not in self.people)  # one order everywhere
        rows = [
            {
                "address": a,
                "display_name": wanted[a][:200],
                "is_provider": False,
                "created_at": self.now,
            }
            for a in missing
        ]
        _insert_ignore(self.session, Person, rows, "address")
        self._read_people(missing)

    def _read_people(self, addresses: list[str]) -> None:
        for part in _chunks(addresses):
            for pid, address, provider in self.session.execute(
                select(Person.id, Person.address, Person.is_provider).where(
                    Person.address.in_(part)
                )
            ):
                self.people[address] = (pid, provider)

    def _prefetch_threads(self, batch: Sequence[Prepared], also: Iterable[int] = ()) -> None:
        """Referenced messages and tagged tickets, with their tickets (and ``also``)
        locked."""
        refs: set[str] = set()
        numbers: set[int] = set()
        for p in batch:
            refs.update(p.parsed.in_reply_to, p.parsed.references, p.parsed.report_message_ids)
            for pattern in self.ing.tag_patterns.values():
                numbers.update(int(n) for n in pattern.findall(p.parsed.subject) if len(n) < 12)
        self.ref_rows: dict[str, list[int]] = {}
        for part in _chunks(sorted(refs)):
            for mid, tid in self.session.execute(
                select(Message.message_id, Message.ticket_id).where(Message.message_id.in_(part))
            ):
                self.ref_rows.setdefault(mid or "", []).append(tid)
        wanted = numbers | set(also) | {t for ts in self.ref_rows.values() for t in ts}
        while wanted:  # follow merges to their end
            self._load_tickets(sorted(wanted))
            wanted = {
                t.merged_into_id
                for t in self.tickets.values()
                if t.merged_into_id and t.merged_into_id not in self.tickets
            }

    def _load_tickets(self, ids: list[int]) -> None:
        for part in _chunks(ids):
            rows = self.session.execute(
                select(
                    Ticket.id,
                    Ticket.queue_id,
                    Ticket.status,
                    Ticket.version,
                    Ticket.requester_id,
                    Ticket.merged_into_id,
                    Ticket.updated_at,
                )
                .where(Ticket.id.in_(part))
                .with_for_update()
            )
            for tid, qid, status, version, requester, merged, updated in rows:
                self.tickets[tid] = _TicketState(
                    tid, qid, status, version, requester, merged, updated
                )

    # ------------------------------------------------------------------ phase 2: decide

    def _decide(
        self, p: Prepared, arrived: datetime, keys: list[str] | None = None
    ) -> list[_Delivery]:
        parsed = p.parsed
        if keys is None:
            keys = (
                [self.default_queue] if parsed.fatal else self.ing.route(parsed, self.default_queue)
            )
        sender_addr = parsed.from_addr or UNKNOWN_SENDER
        sender_id, provider = self.people[sender_addr]
        automatic = automatic_reasons(parsed)
        deliveries = []
        for key in keys:
            queue = self.queues[key]
            found = None if parsed.fatal else self._thread(queue, key, p, sender_id, provider)
            d = self._deliver(p, queue, sender_id, found, arrived, provider, automatic)
            deliveries.append(d)
            if parsed.message_id:
                self.batch_ids[(parsed.message_id, queue.id)] = d.ticket
        if len(deliveries) > 1:
            first = next((d for d in deliveries if d.is_new), None)
            if first is not None:
                first.link_to += [(d.ticket, "same-email") for d in deliveries if d is not first]
        return deliveries

    def _thread(
        self, queue: Queue, key: str, p: Prepared, sender_id: int, provider: bool
    ) -> tuple[_TicketState, str, bool] | None:
        """(ticket, rule, join?) for an email in this queue, or None for a new ticket."""
        parsed = p.parsed
        ordered = [("In-Reply-To", m) for m in parsed.in_reply_to]
        ordered += [("References", m) for m in reversed(parsed.references)]
        ordered += [("bounce of", m) for m in parsed.report_message_ids]
        for header, mid in ordered:
            state = self.batch_ids.get((mid, queue.id))
            if state is None:
                state = next(
                    (
                        self.tickets[t]
                        for t in self.ref_rows.get(mid, ())
                        if t in self.tickets and self.tickets[t].queue_id == queue.id
                    ),
                    None,
                )
            if state is not None:
                return self._live(state, f"{header} {mid}")
        match = self.ing.tag_patterns[key].search(parsed.subject)
        if match and len(match.group(1)) < 12:
            number = int(match.group(1))
            state = self.tickets.get(number)
            if state is not None and state.queue_id == queue.id:
                tag = f"[{queue.tag} #{number}]"
                final = self._merged_end(state)  # participants moved with the messages
                if provider or self._participant(final, sender_id, parsed.from_addr):
                    return self._live(state, f"subject tag {tag} from a participant")
                how = f"new ticket: subject tag {tag} but the sender is not a participant"
                return final, how, False
        return None

    def _merged_end(self, state: _TicketState) -> _TicketState:
        seen = {state.id}
        while state.merged_into_id and state.merged_into_id not in seen:
            seen.add(state.merged_into_id)
            state = self.tickets[state.merged_into_id]
        return state

    def _live(self, state: _TicketState, how: str) -> tuple[_TicketState, str, bool]:
        seen = {state.id}
        while state.merged_into_id and state.merged_into_id not in seen:
            seen.add(state.merged_into_id)
            how += f" (merged into #{state.merged_into_id})"
            state = self.tickets[state.merged_into_id]
        if state.status == Status.CLOSED:
            return state, f"new ticket: follow-up of closed #{state.id} ({how})", False
        return state, how, True

    def _participant(self, state: _TicketState, sender_id: int, address: str) -> bool:
        if address == UNKNOWN_SENDER or not address:
            return False
        if state.requester_id == sender_id:
            return True
        if state.id is None:
            return False
        rows = self.session.execute(
            select(Message.from_addr, Message.to_addrs, Message.cc_addrs).where(
                Message.ticket_id == state.id
            )
        ).all()
        return any(
            address == a.lower() for row in rows for _, a in getaddresses([v for v in row if v])
        )

    def _deliver(
        self,
        p: Prepared,
        queue: Queue,
        sender_id: int,
        found: tuple[_TicketState, str, bool] | None,
        arrived: datetime,
        provider: bool,
        automatic: list[str],
    ) -> _Delivery:
        parsed = p.parsed
        row = {
            "direction": Direction.INBOUND,
            "message_id": parsed.message_id,
            "in_reply_to": " ".join(parsed.in_reply_to) or None,
            "references": " ".join(parsed.references) or None,
            "author_id": sender_id,
            "from_addr": display_address(parsed.from_name, parsed.from_addr)
            if parsed.from_addr
            else "",
            "to_addrs": _fmt(parsed.to),
            "cc_addrs": _fmt(parsed.cc),
            "subject": parsed.subject,
            "date": parsed.date,
            "text_body": parsed.text,
            "text_more": p.text_more,
            "has_html": p.has_html,
        }
        if found is not None and found[2]:
            state, how, _ = found
            state.version += 1
            state.changed = True
            at = max(arrived, state.updated_at or arrived)
            state.updated_at = at
            d = _Delivery(p, queue, sender_id, state, how, False, version=state.version)
            rating = None
            if state.status == Status.RESOLVED and not automatic and not provider:
                rating = parse_rating(parsed.text)
            if rating is not None:
                # Feedback on a resolved ticket: recorded, the ticket stays resolved.
                d.other_events.append(("rating", {"rating": rating[0], "comment": rating[1]}))
            elif not automatic and not provider:
                reopen = {
                    Status.RESOLVED: "reply after resolution",
                    Status.PENDING: "requester replied",
                }
                if state.status in reopen:
                    d.status_events.append(
                        {
                            "from": state.status.value,
                            "to": Status.OPEN.value,
                            "reason": reopen[state.status],
                        }
                    )
                    state.resolved_cleared = state.status == Status.RESOLVED
                    state.status = Status.OPEN
        else:
            state = _TicketState(
                None,
                queue.id,
                Status.NEW,
                1,
                sender_id,
                updated_at=arrived,
                new_index=len(self.new_tickets),
                created_at=arrived,
            )
            self.new_tickets.append(state)
            how = "new ticket" if found is None else found[1]
            d = _Delivery(p, queue, sender_id, state, how, True)
            if found is not None:
                d.link_to.append((found[0], "related"))
            at = arrived
        row.update(threaded_by=how[:200], created_at=at)
        d.message_row = row
        return d

    def _raw_row(self, p: Prepared, disposition: str) -> dict[str, Any]:
        from mail.ingest import arrival

        item = p.item
        return {
            "identity": p.identity,
            "sha256": p.sha256,
            "size": len(item.raw),
            "compression": codec.CODEC,
            "data": p.compressed,
            "mailbox": item.mailbox,
            "folder": item.folder,
            "uidvalidity": item.uidvalidity,
            # (an email the server would not return keeps no UID: nothing may mark it)
            "uid": None if item.unreadable else item.uid,
            "received_at": arrival(item),
            "disposition": disposition,
        }

    def _insert_raws(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        inserted: dict[str, int] = {}
        if not rows:
            return inserted
        if self.sqlite:
            # Under SQLite's write lock, _dedupe has seen every stored identity: all of
            # these are new. (Were one not, the INSERT fails and the batch is retried
            # email by email, where _dedupe finds it.)
            ids = self._insert_with_ids(RAWS, rows)
            return {row["identity"]: rid for row, rid in zip(rows, ids, strict=True)}
        stmt = _insert_skipping(self.session, RAWS, "identity").returning(
            RAWS.c.identity, RAWS.c.id
        )
        # In one order in every process (two pollers claiming the same new emails in
        # opposite orders would wait on each other's unique-index entries).
        for part in _chunks(sorted(rows, key=lambda row: str(row["identity"])), 100):
            for identity, raw_id in self.conn.execute(stmt, part):
                inserted[identity] = raw_id
        return inserted

    # ------------------------------------------------------------------ phase 3: write

    def _write(self) -> None:
        if not self.deliveries:
            return
        self._insert_tickets()
        self._insert_messages()
        self._insert_events_and_links()
        self._update_joined()
        self._insert_flags()
        self._insert_attachments()
        self._auto_acks()
        clocks.touch(self.session, self.touched)

    def _insert_tickets(self) -> None:
        creators = {d.ticket.new_index: d for d in self.deliveries if d.is_new}
        rows = []
        for state in self.new_tickets:
            d = creators.get(state.new_index)
            if d is None:  # decided, then dropped as a concurrent duplicate
                continue
            parsed = d.prepared.parsed
            rows.append(
                (
                    state,
                    {
                        "queue_id": state.queue_id,
                        "subject": parsed.subject or "(no subject)",
                        "requester_id": state.requester_id,
                        "status": Status.NEW,
                        "priority": Priority.NORMAL,
                        "created_at": state.created_at,
                        "updated_at": state.updated_at,
                        "version": state.version,
                    },
                )
            )
        ids = self._insert_with_ids(TICKETS, [r for _, r in rows])
        for (state, _), tid in zip(rows, ids, strict=True):
            state.id = tid
            self.tickets[tid] = state

    def _insert_messages(self) -> None:
        rows = [{**d.message_row, "ticket_id": d.ticket.id} for d in self.deliveries]
        ids = self._insert_with_ids(MESSAGES, rows)
        for d, mid in zip(self.deliveries, ids, strict=True):
            d.message_id = mid

    def _insert_with_ids(self, table: Table, rows: list[dict[str, Any]]) -> list[int]:
        """INSERT ``rows``; their new ids, in order."""
        if not rows:
            return []
        if self.sqlite:
            # SQLAlchemy can only match RETURNING rows to parameters on SQLite by sending
            # one statement per row. The ids are chosen here instead, as SQLite would
            # choose them (max + 1, ...): this transaction holds the database's only
            # write lock, so no one else can take them meanwhile.
            start = self.conn.execute(select(func.max(table.c.id))).scalar() or 0
            ids = list(range(start + 1, start + 1 + len(rows)))
        else:
            # PostgreSQL: drawn from the table's own sequence in one round trip, so the
            # rows go in one executemany (pipelined by psycopg). A multi-row INSERT ...
            # RETURNING instead made psycopg parse a statement of hundreds of parameters
            # again for every 100 rows: a third of the client's time.
            drawn = self.conn.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"
                ),
                {"t": self.conn.dialect.identifier_preparer.format_table(table), "n": len(rows)},
            ).scalars()
            ids = sorted(drawn)  # in row order, as the rows' own INSERT would give them
        insert_rows(self.conn, table, [{**r, "id": i} for r, i in zip(rows, ids, strict=True)])
        return ids

    def _insert_events_and_links(self) -> None:
        events: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        linked: set[tuple[int, int]] = set()
        for d in self.deliveries:
            tid, at = d.ticket.id, d.message_row["created_at"]
            parsed = d.prepared.parsed
            base = {"ticket_id": tid, "at": at, "actor_id": None, "version": d.version}
            if d.is_new:
                events.append(
                    {
                        **base,
                        "kind": "created",
                        "data": {
                            "queue": d.queue.key,
                            "status": "new",
                            "priority": "normal",
                            "requester": parsed.from_addr or UNKNOWN_SENDER,
                            "mailbox": d.prepared.item.mailbox,
                        },
                    }
                )
            events.append(
                {
                    **base,
                    "kind": "message",
                    "data": {
                        "message": d.message_id,
                        "from": parsed.from_addr,
                        "threaded_by": d.message_row["threaded_by"],
                    },
                }
            )
            events += [{**base, "kind": "status", "data": s} for s in d.status_events]
            events += [{**base, "kind": k, "data": data} for k, data in d.other_events]
        # Links after every ticket's own events, so a history always starts "created".
        for d in self.deliveries:
            tid, at = d.ticket.id, d.message_row["created_at"]
            base = {"ticket_id": tid, "at": at, "actor_id": None, "version": d.version}
            for other, kind in d.link_to:
                a, b = tid or 0, other.id or 0
                if a == b or (a, b) in linked:
                    continue
                linked.update({(a, b), (b, a)})
                links += [
                    {"ticket_id": a, "other_id": b, "kind": kind, "created_at": at},
                    {"ticket_id": b, "other_id": a, "kind": kind, "created_at": at},
                ]
                events.append({**base, "kind": "link", "data": {"other": b, "kind": kind}})
                events.append(
                    {
                        **base,
                        "ticket_id": b,
                        "version": other.version,
                        "kind": "link",
                        "data": {"other": a, "kind": kind},
                    }
                )
        self.touched = {e["ticket_id"] for e in events}
        ids = self._insert_with_ids(EVENTS, events)
        self._clocks_of_new_tickets(events, ids)
        if links:
            _insert_ignore_pairs(self.session, links)

    def _clocks_of_new_tickets(self, events: list[dict[str, Any]], ids: list[int]) -> None:
        """Clock rows of the tickets this batch created, from the events just written."""
        created = {s.id: s for s in self.new_tickets if s.id is not None}
        logs: dict[int, list[tuple[int, datetime, str, dict[str, Any]]]] = {}
        for event, eid in zip(events, ids, strict=True):
            if event["ticket_id"] in created:
                logs.setdefault(event["ticket_id"], []).append(
                    (eid, event["at"].astimezone(UTC), event["kind"], event["data"])
                )
        queue_keys = {q.id: q.key for q in self.queues.values()}
        clocks.add_new(
            self.session,
            [
                clocks.NewTicket(
                    tid,
                    created[tid].queue_id,
                    queue_keys[created[tid].queue_id],
                    Priority.NORMAL,  # as _insert_tickets writes them
                    Status.NEW,
                    log,
                )
                for tid, log in logs.items()
            ],
        )
        self.touched -= set(logs)  # their later events (an acknowledgement) still count

    def _update_joined(self) -> None:
        """One executemany per shape for every ticket this batch joined (rows locked)."""
        changed = [
            t
            for t in self.tickets.values()
            if t.changed and t.id is not None and t.new_index is None
        ]
        for clear in (False, True):
            rows = [
                {"tid": t.id, "v": t.version, "u": t.updated_at, "st": t.status}
                for t in changed
                if t.resolved_cleared is clear
            ]
            if not rows:
                continue
            values: dict[str, Any] = {
                "version": bindparam("v"),
                "updated_at": bindparam("u", type_=TICKETS.c.updated_at.type),
                "status": bindparam("st", type_=TICKETS.c.status.type),
            }
            if clear:
                values["resolved_at"] = None
            stmt = update(TICKETS).where(TICKETS.c.id == bindparam("tid")).values(**values)
            self.conn.execute(stmt, rows)

    def _insert_flags(self) -> None:
        rows = []
        for d in self.deliveries:
            for flag, detail in self.ing.flags_for(d.prepared, d.queue.key, d.is_new):
                rows.append(
                    {
                        "ticket_id": d.ticket.id,
                        "flag": flag,
                        "detail": one_line(detail)[:2000],
                        "created_at": self.now,
                    }
                )
        unique = {(r["ticket_id"], r["flag"]): r for r in rows}
        existing = set()
        if unique:
            ids = list({r["ticket_id"] for r in unique.values()})
            existing = {
                (t, f)
                for t, f in self.session.execute(
                    select(TicketFlag.ticket_id, TicketFlag.flag).where(
                        TicketFlag.ticket_id.in_(ids)
                    )
                )
            }
        fresh = [r for k, r in unique.items() if k not in existing]
        insert_rows(self.conn, FLAGS, fresh)

    def _insert_attachments(self) -> None:
        blobs: dict[str, dict[str, Any]] = {}
        rows = []
        for d in self.deliveries:
            for part in d.prepared.parsed.attachments:
                digest = hashlib.sha256(part.data).hexdigest()
                if digest not in blobs:
                    blobs[digest] = {
                        "sha256": digest,
                        "size": len(part.data),
                        "compression": codec.CODEC,
                        "data": part.data,
                    }
                rows.append(
                    {
                        "message_id": d.message_id,
                        "filename": part.filename,
                        "media_type": part.media_type,
                        "size": len(part.data),
                        "sha256": digest,
                        "content_id": part.content_id,
                        "inline": part.inline,
                    }
                )
        if not rows:
            return
        known: set[str] = set()
        for digests in _chunks(list(blobs)):
            known.update(self.session.scalars(select(Blob.sha256).where(Blob.sha256.in_(digests))))
        fresh = [b for k, b in blobs.items() if k not in known]
        for blob in fresh:
            blob["data"] = codec.compress(blob["data"], codec.BLOB_LEVEL)
        _insert_ignore(self.session, Blob, fresh, "sha256")
        insert_rows(self.conn, ATTACHMENTS, rows)

    def _auto_acks(self) -> None:
        for d in self.deliveries:
            if d.is_new:
                self.ing.maybe_acknowledge(self.session, d)


def _insert_ignore_pairs(session: Session, rows: list[dict[str, Any]]) -> None:
    wanted = {(r["ticket_id"], r["other_id"]): r for r in rows}
    have = {
        (a, b)
        for a, b in session.execute(
            select(TicketLink.ticket_id, TicketLink.other_id).where(
                TicketLink.ticket_id.in_([k[0] for k in wanted])
            )
        )
    }
    fresh = [r for k, r in wanted.items() if k not in have]
    insert_rows(session.connection(), LINKS, fresh)
