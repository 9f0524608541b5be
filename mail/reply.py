"""Replying to a ticket: render a template (or take a text), then queue the email.

:func:`compose` reads the ticket and renders; :func:`queue` writes the outgoing message,
its ``reply`` event, the status the template leads to and the outbox entry in the
caller's one transaction, checked against the ticket version the provider composed
on. The sender (:mod:`mail.sender`) delivers it after the commit.
"""

from __future__ import annotations

import hashlib
import mimetypes
import textwrap
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail import compose as mailcompose
from mail import templates
from mail.batch import _insert_skipping
from mail.parse import display_address, display_addresses
from mail.quotes import own_text
from store import codec, outbox, services
from store.config import Settings
from store.models import (
    Attachment,
    Blob,
    Direction,
    Message,
    Person,
    Queue,
    Status,
    Ticket,
    text_columns,
    utcnow,
)

WRAP = 72


@dataclass(frozen=True)
class Draft:
    """A reply ready to queue (or to show for review)."""

    ticket_id: int
    version: int
    subject: str
    body: str
    to: tuple[tuple[str, str], ...]
    cc: tuple[tuple[str, str], ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    status_after: str | None = None
    template: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    attachments: tuple[str, ...] = ()  # paths of files to send along


def template_folders(settings: Settings, queue_key: str) -> list[Path]:
    """The queue's template folders first, then the global ones (shipped ones come last)."""
    folders: list[str] = []
    for q in settings.queue:
        if q.key == queue_key:
            folders += q.template_folders
    folders += settings.templates.folders
    return [Path(f).expanduser() for f in folders]


def wrap(text: str, width: int = WRAP) -> str:
    """Long lines wrapped at ``width``; quoted lines, indented lines and long URLs kept."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width or line.startswith((">", " ", "\t")) or "://" in line:
            out.append(line)
        else:
            out += textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)


def _answered(session: Session, ticket_id: int) -> Message | None:
    """The newest received message: the one a reply answers (for threading and quoting)."""
    return session.scalar(
        select(Message)
        .where(Message.ticket_id == ticket_id, Message.direction == Direction.INBOUND)
        .order_by(Message.id.desc())
        .limit(1)
    )


def context(
    session: Session, settings: Settings, ticket: Ticket, provider: Person | None
) -> dict[str, Any]:
    """The documented template variables (see README, "Templates")."""
    queue = session.get_one(Queue, ticket.queue_id)
    requester = session.get_one(Person, ticket.requester_id)
    answered = _answered(session, ticket.id)
    name = settings.name or (provider.display_name if provider else "") or ""
    return {
        "ticket": {
            "id": ticket.id,
            "subject": ticket.subject,
            "status": ticket.status.value,
            "priority": ticket.priority.value,
            "category": ticket.category,
            "created_at": ticket.created_at,
            "reference": f"[{queue.tag} #{ticket.id}]",
        },
        "requester": {
            "name": requester.display_name or requester.address,
            "address": requester.address,
        },
        "provider": {
            "name": name or (provider.address if provider else ""),
            "address": provider.address if provider else "",
        },
        "queue": {
            "key": queue.key,
            "name": queue.name,
            "tag": queue.tag,
            "address": queue.address,
            "signature": queue.signature,
        },
        "message": {
            "from": answered.from_addr if answered else "",
            "date": answered.date if answered else None,
            "subject": answered.subject if answered else "",
            "text": answered.full_text if answered else "",
        },
        "sla": _sla(session, settings, ticket.id),
    }


def _sla(session: Session, settings: Settings, ticket_id: int) -> dict[str, Any]:
    """``sla.first_response`` / ``sla.resolution``: state, target_hours, due (empty: no SLA)."""
    from datetime import UTC, datetime

    from store import clocks

    keeper = session.info.get("clocks") or clocks.Keeper.from_settings(settings)
    found = clocks.reports(session, keeper, [ticket_id], datetime.now(UTC)).get(ticket_id)
    if found is None or not settings.sla:
        return {}
    out: dict[str, Any] = {}
    for name, target in (
        ("first_response", found.first_response),
        ("resolution", found.resolution),
    ):
        if target.target is None:
            continue
        out[name] = {
            "state": target.state,
            "target_hours": round(target.target / 3600, 1),
            "due": target.due,
        }
    return out


def signature(settings: Settings, queue: Queue, provider_name: str) -> str:
    """The signature block: the provider's name, the queue's signature, the provider's own."""
    parts = [provider_name or queue.name]
    if queue.signature.strip():
        parts.append(queue.signature.strip())
    if settings.signature.strip():
        parts.append(settings.signature.strip())
    return "-- \n" + "\n".join(parts)


def compose(
    session: Session,
    settings: Settings,
    ticket_id: int,
    provider: Person | None,
    *,
    template: str | None = None,
    body: str | None = None,
    variables: dict[str, Any] | None = None,
    quote: bool = True,
    allow_empty: bool = False,
) -> Draft:
    """Render ``template`` (or take ``body``) into a draft reply to the ticket's requester.

    With ``quote`` the answered message follows the text, quoted, before the signature.
    """
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise services.NotFoundError(f"there is no ticket #{ticket_id}")
    queue = session.get_one(Queue, ticket.queue_id)
    variables = dict(variables or {})
    ctx = context(session, settings, ticket, provider)
    subject = mailcompose.reply_subject(ticket.subject)
    status_after = None
    if template is not None:
        tpl = templates.find(template, template_folders(settings, queue.key))
        if tpl.queues and queue.key not in tpl.queues:
            raise templates.TemplateError(
                f"template {tpl.name!r} is for the queues {', '.join(tpl.queues)}, not {queue.key}"
            )
        text = templates.render(tpl, {**ctx, **variables})
        subject = tpl.subject or subject
        status_after = tpl.status_after or None
    else:
        text = body or ""
    if not text.strip() and not allow_empty:
        raise services.ActionError("a reply needs some text")
    answered = _answered(session, ticket.id)
    text = wrap(text.rstrip()) + "\n\n"
    quoted = answered.full_text if quote and answered is not None else ""
    if answered is not None and quoted.strip():
        when = f"{answered.date:%a %d %b %Y %H:%M}" if answered.date else "earlier"
        text += f"On {when}, {answered.from_addr} wrote:\n"
        text += templates.quote(own_text(quoted)) + "\n\n"
    text += signature(settings, queue, ctx["provider"]["name"]) + "\n"
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # mail bodies may carry CRLF
    requester = session.get_one(Person, ticket.requester_id)
    to = ((requester.display_name, requester.address),)
    references = mailcompose.chain_references(
        (answered.references or "").split() if answered else [],
        answered.message_id if answered else None,
    )
    return Draft(
        ticket_id=ticket.id,
        version=ticket.version,
        subject=mailcompose.tagged_subject(subject, queue.tag, ticket.id),
        body=text,
        to=to,
        in_reply_to=answered.message_id if answered else None,
        references=tuple(references),
        status_after=status_after,
        template=template,
        variables=variables,
    )


def parse_addresses(text: str) -> tuple[tuple[str, str], ...]:
    """``"Ann <a@x>, b@y"`` as (name, address) pairs; ValueError on anything else."""
    pairs = tuple((n, a) for n, a in getaddresses([text]) if a)
    for _, address in pairs:
        if "@" not in address or " " in address:
            raise ValueError(f"{address!r} is not an email address")
    return pairs


MAX_ATTACHMENTS_BYTES = 25 * 1024 * 1024


def read_attachments(paths: tuple[str, ...]) -> list[tuple[str, str, bytes]]:
    """(file name, media type, bytes) of each file; ActionError naming a file that fails."""
    found, total = [], 0
    for raw_path in paths:
        path = Path(raw_path).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise services.ActionError(f"cannot attach {path}: {exc.strerror}") from None
        total += len(data)
        if total > MAX_ATTACHMENTS_BYTES:
            raise services.ActionError("attachments over 25 MB: most mail servers refuse that")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        found.append((path.name, media_type, data))
    return found


def _store_attachments(session: Session, row: Message, files: list[tuple[str, str, bytes]]) -> None:
    for filename, media_type, data in files:
        digest = hashlib.sha256(data).hexdigest()
        # Insert-or-keep without reading first: under row-level security a provider
        # cannot see a blob only other queues use, and must not learn it exists.
        session.execute(
            _insert_skipping(session, Blob, "sha256"),
            {
                "sha256": digest,
                "size": len(data),
                "compression": codec.CODEC,
                "data": codec.compress(data, codec.BLOB_LEVEL),
            },
        )
        session.add(
            Attachment(
                message_id=row.id,
                filename=filename,
                media_type=media_type,
                size=len(data),
                sha256=digest,
            )
        )


def queue(session: Session, settings: Settings, draft: Draft, actor: Person) -> Message:
    """Store the reply and queue its email, atomically with its event and status change."""
    files = read_attachments(draft.attachments)
    ticket = session.get_one(Ticket, draft.ticket_id)
    queue_row = session.get_one(Queue, ticket.queue_id)
    now = utcnow()
    message_id = mailcompose.new_message_id(queue_row.address, ticket.id)
    from_name = f"{settings.name or actor.display_name or actor.address} via {queue_row.name}"
    email = mailcompose.build(
        from_name=from_name,
        from_addr=queue_row.address,
        to=list(draft.to),
        cc=list(draft.cc),
        subject=draft.subject,
        body=draft.body,
        ticket_id=ticket.id,
        message_id=message_id,
        date=now,
        in_reply_to=draft.in_reply_to,
        references=list(draft.references),
        attachments=files,
    )
    row = Message(
        direction=Direction.OUTBOUND,
        message_id=message_id,
        in_reply_to=draft.in_reply_to,
        references=" ".join(draft.references) or None,
        from_addr=display_address(from_name, queue_row.address),
        to_addrs=display_addresses(draft.to),
        cc_addrs=display_addresses(draft.cc),
        subject=draft.subject,
        date=now,
        **text_columns(draft.body),
        threaded_by="our reply",
    )
    status = Status(draft.status_after) if draft.status_after else None
    data = {"to": [a for _, a in draft.to], "template": draft.template}
    services.record_reply(session, ticket.id, draft.version, actor, row, status, data)
    _store_attachments(session, row, files)
    outbox.enqueue(
        session,
        ticket_id=ticket.id,
        message_row_id=row.id,
        message_id=message_id,
        mail_from=queue_row.address,
        recipients=[a for _, a in (*draft.to, *draft.cc)],
        raw=email.as_bytes(),
        kind="reply",
    )
    return row
