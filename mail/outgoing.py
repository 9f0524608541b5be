"""Queueing deskq's own mail: stored as an outbound message and an outbox entry together."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from mail import compose, templates
from mail.parse import display_address
from store import outbox, services
from store.config import QueueSettings, Settings
from store.models import Direction, Message, Queue, Ticket, text_columns, utcnow

log = logging.getLogger(__name__)


def template_context(
    ticket: Ticket, queue: Queue, requester_name: str, requester_addr: str
) -> dict[str, object]:
    """The variables every template can use (see README, "Templates")."""
    return {
        "ticket": {
            "id": ticket.id,
            "subject": ticket.subject,
            "status": ticket.status.value,
            "priority": ticket.priority.value,
            "created_at": ticket.created_at,
        },
        "requester": {"name": requester_name or requester_addr, "address": requester_addr},
        "queue": {
            "key": queue.key,
            "name": queue.name,
            "tag": queue.tag,
            "address": queue.address,
            "signature": queue.signature,
        },
    }


def queue_automatic_reply(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    queue: Queue,
    qs: QueueSettings,
    answered: Message,
    to_name: str,
    to_addr: str,
) -> Message | None:
    """Render the queue's acknowledgement template and queue it (None if it cannot render)."""
    try:
        template = templates.find(qs.auto_ack_template)
        body = templates.render(template, template_context(ticket, queue, to_name, to_addr))
    except templates.TemplateError as exc:
        log.error("auto-acknowledgement for ticket #%s not sent: %s", ticket.id, exc)
        services.record_event(session, ticket, "auto-ack-failed", None, {"error": str(exc)})
        return None
    now = utcnow()
    message_id = compose.new_message_id(queue.address, ticket.id)
    references = compose.chain_references((answered.references or "").split(), answered.message_id)
    subject = compose.tagged_subject(
        template.subject or compose.reply_subject(ticket.subject), queue.tag, ticket.id
    )
    email = compose.build(
        from_name=queue.name,
        from_addr=queue.address,
        to=[(to_name, to_addr)],
        subject=subject,
        body=body,
        ticket_id=ticket.id,
        message_id=message_id,
        date=now,
        in_reply_to=answered.message_id,
        references=references,
        automatic=True,
    )
    row = Message(
        ticket_id=ticket.id,
        direction=Direction.OUTBOUND,
        message_id=message_id,
        in_reply_to=answered.message_id,
        references=" ".join(references) or None,
        from_addr=display_address(queue.name, queue.address),
        to_addrs=display_address(to_name, to_addr),
        subject=subject,
        date=now,
        **text_columns(body),
        threaded_by="automatic acknowledgement",
    )
    session.add(row)
    session.flush()
    outbox.enqueue(
        session,
        ticket_id=ticket.id,
        message_row_id=row.id,
        message_id=message_id,
        mail_from=queue.address,
        recipients=[to_addr],
        raw=email.as_bytes(),
        kind="auto-ack",
    )
    services.record_event(session, ticket, "auto-ack", None, {"message": row.id, "to": to_addr})
    return row
