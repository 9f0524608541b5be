"""Building the emails deskq sends, so they thread everywhere and never start a loop."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
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


def envelope_address(address: str) -> str:
    """``address`` as deskq sends it: an internationalised domain in its ASCII form
    (IDNA, ``xn--``), which every server accepts; the local part as it is."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:  # not a valid domain name: left as written (SMTPUTF8 carries it)
        return address


def _header_address(name: str, address: str, utf8: bool) -> str | Address:
    if not utf8:
        return formataddr((name, address))
    local, _, domain = address.rpartition("@")
    return Address(name, local, domain)


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
    from_addr = envelope_address(from_addr)
    to = [(name, envelope_address(a)) for name, a in to]
    cc = [(name, envelope_address(a)) for name, a in cc]
    # Still beyond ASCII in that form: a non-ASCII local part, which has no other. The
    # headers are UTF-8 (RFC 6532) and the sender needs a server offering SMTPUTF8.
    utf8 = not all(a.isascii() for a in (from_addr, *(a for _, a in (*to, *cc))))
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = _header_address(from_name, from_addr, utf8)
    msg["Reply-To"] = _header_address("", from_addr, utf8)
    msg["To"] = [_header_address(name, a, utf8) for name, a in to]
    if cc:
        msg["Cc"] = [_header_address(name, a, utf8) for name, a in cc]
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
