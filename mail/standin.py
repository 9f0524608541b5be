"""Stand-ins: the email deskq stores, as a ticket flagged ``unreadable``, in place of
one it cannot store (the server refuses it, the file cannot be read, it is too large).

Nothing vanishes unseen: a provider sees the ticket, which says what and where the
email is and what to do. A stand-in's text must be the same on every attempt (it is
its identity, so a retried pass recognises it); what varies, such as the server's or
the system's words, goes in the flag.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP

from mail.prepare import Incoming


def place_key(*parts: str) -> str:
    """A short, stable hash naming a place (a mailbox and folder) in a Message-ID."""
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def stand_in_id(what: str, place: str) -> str:
    """The Message-ID of the stand-in for email ``what`` (a UID, a file) of ``place``:
    how a source finds the stand-ins it stored before (messages.message_id)."""
    return f"<unreadable.{what}.{place}@deskq.invalid>"


def stand_in(
    *,
    subject: str,
    message_id: str,
    text: str,
    flag: str,
    mailbox: str,
    folder: str = "",
    uidvalidity: int | None = None,
    uid: int | None = None,
    received_at: datetime | None = None,
) -> Incoming:
    """The stand-in email, ready to store. ``message_id`` must fit in 60 characters
    with what tells it apart (an identity keeps the first 60)."""
    notice = EmailMessage()
    notice["Subject"] = subject
    notice["Message-ID"] = message_id
    notice.set_content(text)
    return Incoming(
        raw=notice.as_bytes(policy=SMTP),
        mailbox=mailbox,
        folder=folder,
        uidvalidity=uidvalidity,
        uid=uid,
        received_at=received_at,
        unreadable=flag,
    )
