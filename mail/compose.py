"""Building the emails deskq sends, so they thread everywhere and never start a loop."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

from mail.loops import OWN_HEADER

# Keep References bounded (some servers reject huge headers): first id + the latest ones.
MAX_REFERENCES = 20


def tagged_subject(subject: str, tag: str, ticket_id: int) -> str:
    """``subject`` carrying ``[TAG #id]`` exactly once, with Re:-style noise kept sane."""
    marker = f"[{tag} #{ticket_id}]"
    cleaned = re.sub(rf"\[{re.escape(tag)}\s*#\d+\]\s*", "", subject, flags=re.IGNORECASE).strip()
    return f"{marker} {cleaned}".strip()


def reply_subject(subject: str) -> str:
    """``Re: subject`` without piling up Re:/AW:/SV: prefixes."""
    core = re.sub(r"^(\s*(re|aw|sv|antw|vs|r)\s*(\[\d+\])?\s*:\s*)+", "", subject, flags=re.I)
    return f"Re: {core}".strip()


def chain_references(references: Sequence[str], parent_id: str | None) -> list[str]:
    """The References of a reply: the parent's references plus the parent itself."""
    chain = [r for r in references if r != parent_id]
    if parent_id:
        chain.append(parent_id)
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1) :]
    return chain


def new_message_id(queue_address: str, ticket_id: int) -> str:
    """A fresh Message-ID in the queue's domain, fixed when the mail is queued."""
    domain = queue_address.rsplit("@", 1)[-1] or "deskq.invalid"
    return make_msgid(idstring=f"deskq.{ticket_id}", domain=domain)


def build(
    *,
    from_name: str,
    from_addr: str,
    to: Sequence[tuple[str, str]],
    subject: str,
    body: str,
    ticket_id: int,
    message_id: str,
    date: datetime,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    cc: Sequence[tuple[str, str]] = (),
    automatic: bool = False,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> EmailMessage:
    """A plain-text UTF-8 email from a queue (optionally with files), marked as deskq's own."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((from_name, from_addr))
    msg["Reply-To"] = from_addr
    msg["To"] = ", ".join(formataddr(a) for a in to)
    if cc:
        msg["Cc"] = ", ".join(formataddr(a) for a in cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Precedence"] = "bulk"
    msg[OWN_HEADER] = str(ticket_id)
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    for filename, media_type, data in attachments:
        maintype, _, subtype = media_type.partition("/")
        msg.add_attachment(
            data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename
        )
    return msg
