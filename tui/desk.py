"""The TUI's one door to the store: blocking calls that take and return plain data.

Screens call these from thread workers only. Every triage action goes through
:mod:`store.services` (events, version checks); a conflict comes back as data for
the conflict dialog instead of being retried or overwritten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from store import access, pages, services
from store.models import Blob, Person, Priority, Status
from store.query import Query
from store.views import TicketDetail, ticket_detail
from store.workspace import Workspace


@dataclass(frozen=True)
class Target:
    """A ticket an action applies to, at the version the provider was looking at."""

    id: int
    version: int


@dataclass
class Outcome:
    """What happened when an action was applied to some tickets."""

    done: list[int] = field(default_factory=list)
    # (the ticket acted on, the conflict: possibly about another ticket, e.g. a merge target)
    conflicts: list[tuple[Target, services.ConflictError]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    created: list[int] = field(default_factory=list)


Apply = Callable[[Session, Target, Person, Any], Any]


def _claim(s: Session, t: Target, me: Person, _: Any) -> Any:
    return services.claim(s, t.id, t.version, me)


def _assign(s: Session, t: Target, me: Person, who: str | None) -> Any:
    person = services.get_or_create_person(s, who, provider=True) if who else None
    return services.assign(s, t.id, t.version, me, person)


def _status(s: Session, t: Target, me: Person, value: str) -> Any:
    return services.set_status(s, t.id, t.version, me, Status(value))


def _priority(s: Session, t: Target, me: Person, value: str) -> Any:
    return services.set_priority(s, t.id, t.version, me, Priority(value))


def _category(s: Session, t: Target, me: Person, value: str | None) -> Any:
    return services.set_category(s, t.id, t.version, me, value)


def _tags(s: Session, t: Target, me: Person, value: str) -> Any:
    return services.set_tags(s, t.id, t.version, me, value.replace(",", " ").split())


def _note(s: Session, t: Target, me: Person, text: str) -> Any:
    return services.add_note(s, t.id, t.version, me, text)


def _link(s: Session, t: Target, me: Person, other: int) -> Any:
    return services.link(s, t.id, t.version, me, other)


def _merge(s: Session, t: Target, me: Person, into: Target) -> Any:
    return services.merge(s, t.id, t.version, into.id, into.version, me)


def _split(s: Session, t: Target, me: Person, message_id: int) -> Any:
    return services.split(s, t.id, t.version, me, message_id)


def _release(s: Session, t: Target, me: Person, _: Any) -> Any:
    return services.release(s, t.id, t.version, me)


ACTIONS: dict[str, Apply] = {
    "claim": _claim,
    "assign": _assign,
    "status": _status,
    "priority": _priority,
    "category": _category,
    "tags": _tags,
    "note": _note,
    "link": _link,
    "merge": _merge,
    "split": _split,
    "release": _release,
}


class Desk:
    """One provider's view of a workspace (``me`` may be unset: read-only)."""

    def __init__(self, ws: Workspace) -> None:
        import threading

        self.ws = ws
        self.wake_sender = threading.Event()  # set after queueing: the sender goes at once
        self.me = ws.settings.me.strip().lower()
        with ws.db.session() as session:
            self.me_id = pages.person_id(session, self.me) if self.me else None
        self.refresh_scope()

    def refresh_scope(self) -> None:
        """Re-read which queues I may see (store.access); None: every queue."""
        with self.ws.db.session() as s:
            ids = access.scope_for(s, self.me)
        self.scope = tuple(ids) if ids is not None else None

    def queue_keys(self) -> list[str]:
        """The keys of the configured queues I may see, in config order."""
        keys = [q.key for q in self.ws.settings.queue]
        if self.scope is None:
            return keys
        from sqlalchemy import select

        from store.models import Queue

        with self.ws.db.session() as s:
            mine = set(s.scalars(select(Queue.key).where(Queue.id.in_(self.scope))))
        return [k for k in keys if k in mine]

    def scoped(self, query: Query) -> Query:
        """``query`` limited to the queues I may see."""
        if self.scope is None:
            return query
        return dataclasses.replace(query, queue_ids=self.scope)

    def _visible(self, s: Session, ticket_id: int) -> bool:
        return access.in_scope(s, self.scope, ticket_id)

    # ------------------------------------------------------------------ reading

    def first_page(self, query: Query, limit: int) -> list[pages.QueueRow]:
        """The first rows of the queue in ``query``'s order."""
        self.refresh_scope()
        query = self.scoped(query)
        with self.ws.db.session() as s:
            return self._with_sla(s, pages.fetch_page(s, query, self.me_id, limit=limit))

    def page_after(self, query: Query, key: pages.Key, limit: int) -> list[pages.QueueRow]:
        """Rows after ``key``."""
        query = self.scoped(query)
        with self.ws.db.session() as s:
            rows = pages.fetch_page(s, query, self.me_id, after=key, limit=limit)
            return self._with_sla(s, rows)

    def page_before(self, query: Query, key: pages.Key, limit: int) -> list[pages.QueueRow]:
        """Rows before ``key``."""
        query = self.scoped(query)
        with self.ws.db.session() as s:
            rows = pages.fetch_page(s, query, self.me_id, before=key, limit=limit)
            return self._with_sla(s, rows)

    def last_page(self, query: Query, limit: int) -> list[pages.QueueRow]:
        """The last rows."""
        query = self.scoped(query)
        with self.ws.db.session() as s:
            return self._with_sla(s, pages.fetch_last_page(s, query, self.me_id, limit=limit))

    def _with_sla(self, s: Session, rows: list[pages.QueueRow]) -> list[pages.QueueRow]:
        """Rows with their time left on the nearest SLA target (only when SLAs are set)."""
        if not self.ws.settings.sla or not rows or self.ws.db.keeper is None:
            return rows
        from datetime import UTC, datetime

        from store import clocks, sla

        active = [r.ticket.id for r in rows if r.ticket.status not in ("resolved", "closed")]
        found = clocks.reports(s, self.ws.db.keeper, active, datetime.now(UTC))
        out = []
        for row in rows:
            target = sla.nearest(found[row.ticket.id]) if row.ticket.id in found else None
            if target is None or target.target is None:
                out.append(row)
                continue
            state = "breached" if target.breached else "at-risk" if target.at_risk else target.state
            out.append(dataclasses.replace(row, sla_left=target.left, sla_state=state))
        return out

    def count(self, query: Query) -> int:
        """How many tickets match."""
        query = self.scoped(query)
        with self.ws.db.session() as s:
            return pages.count(s, query, self.me_id)

    def rows(self, query: Query, ids: Iterable[int]) -> dict[int, pages.QueueRow | None]:
        """Fresh rows for ``ids`` (None: no longer in the view)."""
        query = self.scoped(query)
        with self.ws.db.session() as s:
            found = pages.rows_by_id(s, query, self.me_id, ids)
            fresh = {r.ticket.id: r for r in self._with_sla(s, [r for r in found.values() if r])}
            return {tid: fresh.get(tid) for tid in found}

    def versions(self, ids: Iterable[int]) -> dict[int, int]:
        """The current version of each ticket that exists."""
        from sqlalchemy import select

        from store.models import Ticket

        with self.ws.db.session() as s:
            rows = s.execute(select(Ticket.id, Ticket.version).where(Ticket.id.in_(list(ids))))
            return {tid: version for tid, version in rows}

    def cursor(self) -> int:
        """The change feed's current position."""
        with self.ws.db.session() as s:
            return pages.change_cursor(s)

    def changes(self, cursor: int, gaps: Iterable[int] = ()) -> pages.Changes:
        """What changed since ``cursor`` (and in the ``gaps`` left by late commits)."""
        with self.ws.db.session() as s:
            return pages.changes_since(s, cursor, gaps=gaps)

    def detail(self, ticket_id: int, mark_read: bool = True) -> TicketDetail | None:
        """A ticket's conversation and history; by default marks it read for me.

        None when it does not exist or is in a queue I may not see.
        """
        with self.ws.db.session() as s:
            if not self._visible(s, ticket_id):
                return None
            detail = ticket_detail(s, ticket_id)
        if detail is not None and mark_read:
            self.mark_read(ticket_id, detail.ticket.version)
        return detail

    def mark_read(self, ticket_id: int, version: int) -> None:
        """Remember that I have seen ``ticket_id`` at ``version`` (and audit the view)."""
        if self.me_id is not None:
            with self.ws.db.write() as s:
                pages.mark_read(s, self.me_id, ticket_id, version)
                access.record_view(s, self.me_id, ticket_id)

    def mark_unread(self, ticket_id: int) -> None:
        """Show the ticket as unseen again."""
        if self.me_id is not None:
            with self.ws.db.write() as s:
                pages.mark_unread(s, self.me_id, ticket_id)

    def raw_headers(self, message_id: int) -> str:
        """The header block of a message's raw source ('' when there is none)."""
        from store.models import Message, RawSource

        with self.ws.db.session() as s:
            message = s.get(Message, message_id)
            raw = s.get(RawSource, message.raw_id) if message and message.raw_id else None
            if raw is None:
                return ""
            data = raw.content()
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        return head.decode("utf-8", "replace")

    def attachment_bytes(self, sha256: str) -> bytes:
        """An attachment's content."""
        with self.ws.db.session() as s:
            blob = s.get(Blob, sha256)
            if blob is None:
                raise services.NotFoundError("the attachment's content is missing")
            return blob.content()

    def providers(self) -> list[tuple[str, str]]:
        """(address, name) of providers, for assigning."""
        with self.ws.db.session() as s:
            return pages.provider_choices(s)

    def categories(self) -> list[str]:
        """Categories in use in my queues."""
        with self.ws.db.session() as s:
            return pages.category_choices(s, self.scope)

    def views(self) -> list[tuple[str, str]]:
        """My saved views."""
        if self.me_id is None:
            return []
        with self.ws.db.session() as s:
            return pages.saved_views(s, self.me_id)

    def save_view(self, name: str, text: str) -> None:
        """Save the current filter under ``name``."""
        if self.me_id is None:
            raise services.ActionError('set me = "your address" in the config to save views')
        with self.ws.db.write() as s:
            pages.save_view(s, self.me_id, name, text)

    def delete_view(self, name: str) -> bool:
        """Delete a saved view."""
        if self.me_id is None:
            return False
        with self.ws.db.write() as s:
            return pages.delete_view(s, self.me_id, name)

    # ------------------------------------------------------------------ replying

    def templates_for(self, ticket_id: int) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, description, required variables) of the templates usable on the ticket."""
        from mail import reply, templates
        from store.models import Queue, Ticket

        with self.ws.db.session() as s:
            ticket = s.get_one(Ticket, ticket_id)
            key = s.get_one(Queue, ticket.queue_id).key
        found = templates.available(reply.template_folders(self.ws.settings, key))
        return [
            (t.name, t.description, t.requires) for t in found if not t.queues or key in t.queues
        ]

    def compose(
        self, ticket_id: int, template: str | None, variables: dict[str, str], body: str = ""
    ) -> Any:
        """A rendered draft reply (mail.reply.Draft); TemplateError names what is wrong."""
        from mail import reply

        with self.ws.db.session() as s:
            me = pages.person_id(s, self.me) if self.me else None
            actor = s.get(Person, me) if me else None
            return reply.compose(
                s,
                self.ws.settings,
                ticket_id,
                actor,
                template=template,
                body=body or None,
                variables=variables,
                allow_empty=template is None,
            )

    def preview(self, ticket_id: int, template: str | None) -> str:
        """The template rendered on the ticket, required values shown as <name>."""
        required: tuple[str, ...] = ()
        for name, _, needs in self.templates_for(ticket_id):
            if name == template:
                required = needs
        values = {k: f"<{k}>" for k in required}
        if template is None:
            return "(a blank reply: you write it)"
        draft = self.compose(ticket_id, template, values)
        return f"Subject: {draft.subject}\n\n{draft.body}"

    def send_reply(self, draft: Any) -> None:
        """Queue the reply (ConflictError if the ticket moved on since ``draft.version``)."""
        from mail import reply

        if not self.me:
            raise services.ActionError('set me = "your address" in the config to reply')
        with self.ws.db.write() as s:
            me = services.get_or_create_person(s, self.me, self.ws.settings.name, provider=True)
            reply.queue(s, self.ws.settings, draft, me)
            s.flush()
            pages.mark_read(s, me.id, draft.ticket_id, services.current_version(s, draft.ticket_id))
        self.wake_sender.set()

    def outbox(self, with_sent: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        """Outgoing mail, newest first: what waits or failed (and the last sent, if asked)."""
        from sqlalchemy import select

        from store.models import OutboxItem, OutboxState

        with self.ws.db.session() as s:
            stmt = select(OutboxItem).order_by(OutboxItem.id.desc()).limit(limit)
            if self.scope is not None:
                from store.models import Ticket

                stmt = stmt.where(
                    OutboxItem.ticket_id.in_(
                        select(Ticket.id).where(Ticket.queue_id.in_(self.scope))
                    )
                )
            if not with_sent:
                stmt = stmt.where(OutboxItem.state != OutboxState.SENT)
            return [
                {
                    "id": i.id,
                    "ticket": i.ticket_id,
                    "state": i.state.value,
                    "kind": i.kind,
                    "attempts": i.attempts,
                    "to": i.recipients,
                    "last_error": i.last_error,
                }
                for i in s.scalars(stmt)
            ]

    def breached_since(self, since: float, until: float) -> list[tuple[int, str]]:
        """My active tickets whose SLA target was missed in (since, until]: (id, subject)."""
        from sqlalchemy import select

        from store.models import Ticket, TicketClock

        if self.me_id is None or self.ws.db.keeper is None:
            return []
        with self.ws.db.session() as s:
            rows = s.execute(
                select(Ticket.id, Ticket.subject)
                .join(TicketClock, TicketClock.ticket_id == Ticket.id)
                .where(
                    TicketClock.due > since,
                    TicketClock.due <= until,
                    TicketClock.assignee_id == self.me_id,
                    *([TicketClock.queue_id.in_(self.scope)] if self.scope is not None else []),
                )
                .order_by(TicketClock.due)
            )
            return [(tid, subject) for tid, subject in rows]

    def report(self, since: str, queue: str | None, by: str) -> Any:
        """The team report (:func:`store.report.for_settings`) as of now."""
        from datetime import UTC, datetime

        from store.report import for_settings

        with self.ws.db.session() as s:
            return for_settings(
                s,
                self.ws.settings,
                since,
                now=datetime.now(UTC),
                queue=queue,
                by=by,
                queue_ids=self.scope,
            )

    def outbox_failed(self) -> int:
        """How many emails failed for good (shown on the queue's status line)."""
        from sqlalchemy import func, select

        from store.models import OutboxItem, OutboxState

        with self.ws.db.session() as s:
            stmt = select(func.count()).where(OutboxItem.state == OutboxState.FAILED)
            if self.scope is not None:
                from store.models import Ticket

                mine = select(Ticket.id).where(Ticket.queue_id.in_(self.scope))
                stmt = stmt.where(OutboxItem.ticket_id.in_(mine))
            return int(s.scalar(stmt) or 0)

    def retry_outbox(self, outbox_id: int) -> None:
        """Queue a failed item again, due now, and wake the sender."""
        from mail import sender

        sender.retry(self.ws.db, outbox_id)
        self.wake_sender.set()

    # ------------------------------------------------------------------ acting

    def apply(self, action: str, targets: Iterable[Target], value: Any = None) -> Outcome:
        """Apply one action to each target in its own transaction; collect what happened."""
        if not self.me:
            raise services.ActionError('set me = "your address" in the config to act on tickets')
        outcome = Outcome()
        self.refresh_scope()
        for target in targets:
            try:
                with self.ws.db.write() as s:
                    others = [target.id]
                    if isinstance(value, Target):
                        others.append(value.id)  # merge into
                    elif action == "link" and isinstance(value, int):
                        others.append(value)
                    for tid in others:
                        if not self._visible(s, tid):
                            raise services.NotFoundError(f"no ticket #{tid} in your queues")
                    me = services.get_or_create_person(s, self.me, provider=True)
                    self.me_id = me.id
                    result = ACTIONS[action](s, target, me, value)
                    ticket_id = getattr(result, "ticket_id", None) or target.id
                    if action == "split":
                        outcome.created.append(result.id)
                        pages.mark_read(s, me.id, result.id, result.version)
                    s.flush()
                    version = services.current_version(s, target.id)
                    pages.mark_read(s, me.id, target.id, version)
                    if action == "merge":  # the next source merges into the new version
                        value = Target(value.id, services.current_version(s, value.id))
                outcome.done.append(ticket_id)
            except services.ConflictError as exc:
                outcome.conflicts.append((target, exc))
            except services.ActionError as exc:
                outcome.errors.append(f"#{target.id}: {exc}")
        return outcome
