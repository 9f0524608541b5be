"""The outbox: outgoing mail queued in the same transaction as the reply it carries."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.models import OutboxItem, OutboxState, utcnow


def enqueue(
    session: Session,
    *,
    ticket_id: int | None,
    message_row_id: int | None,
    message_id: str,
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    kind: str = "reply",
) -> OutboxItem:
    """Queue one email for the sender (delivered after the surrounding commit)."""
    item = OutboxItem(
        ticket_id=ticket_id,
        message_row_id=message_row_id,
        message_id=message_id,
        kind=kind,
        mail_from=mail_from,
        recipients=", ".join(recipients),
        to_addr=(recipients[0] if recipients else "").lower(),
        raw=raw,
        state=OutboxState.QUEUED,
        next_attempt_at=utcnow(),
    )
    session.add(item)
    session.flush()
    return item


def recent_count(session: Session, to_addr: str, kind: str, since: datetime | None = None) -> int:
    """How many mails of ``kind`` went (or wait to go) to ``to_addr`` since ``since`` (1 h)."""
    since = since or utcnow() - timedelta(hours=1)
    return (
        session.scalar(
            select(func.count())
            .select_from(OutboxItem)
            .where(
                OutboxItem.to_addr == to_addr.lower(),
                OutboxItem.kind == kind,
                OutboxItem.created_at >= since,
            )
        )
        or 0
    )
