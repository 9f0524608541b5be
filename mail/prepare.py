"""One email parsed, hashed and compressed, ready to store: the work done outside the transaction.

Light on purpose (no database code): parse workers import this module and nothing
heavier, so a worker process is ready a fraction of a second after it is started.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from mail.parse import ParsedMessage, content_identity, parse
from store import codec

# Emails larger than this are never read: a ticket flagged unreadable stands in for
# each (mail.standin), and the email is left where it is. A raw source this size
# takes several times as much memory while it is parsed, and neither SQLite nor
# PostgreSQL stores a value over 1 GB.
STORE_LIMIT = 256 * 1024 * 1024


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
    # Set when the source could not read the email at all: ``raw`` is then deskq's
    # account of it (a ticket says what happened), and the email itself is left where
    # it is, untouched: no after-action, no sync record of its UID.
    unreadable: str | None = None
    # The Message-ID a stand-in for this email would have (mail.standin) when its source
    # may have stored one on an earlier attempt: once this email is stored, that
    # stand-in's ticket is linked to where the email went, and resolved.
    stand_in: str | None = None


@dataclass
class Prepared:
    """An email parsed and hashed, ready to store (made outside the transaction)."""

    item: Incoming
    parsed: ParsedMessage
    identity: str
    sha256: str
    compressed: bytes
    too_large: bool = False
    # Whether it had an HTML part (the HTML is not kept apart from the raw source).
    has_html: bool = False
    # The identity this email had before deskq hashed the first Received header of
    # email with neither Message-ID nor Date (None: the same as ``identity``).
    legacy_identity: str | None = None
    # The body past codec.TEXT_INLINE characters, compressed (``parsed.text`` then
    # holds only the first part): done here, in the worker, off the writer's path.
    text_more: bytes | None = None


def prepare(item: Incoming, max_bytes: int) -> Prepared:
    """Parse, hash and compress one email; never raises. Safe to run in worker processes."""
    raw = item.raw
    too_large = len(raw) > max_bytes
    if too_large:
        parsed = parse(_head_only(raw))
        parsed.text, parsed.html, parsed.attachments = "", None, []
    else:
        parsed = parse(raw)
    has_html, parsed.html = parsed.html is not None, None  # not stored: not sent back either
    parsed.text, text_more = codec.split_text(parsed.text)
    if item.unreadable:
        parsed.fatal = item.unreadable
    identity = content_identity(raw, parsed.message_id)
    legacy = None
    if parsed.message_id is None:
        legacy = content_identity(raw, None, first_received=False)
    return Prepared(
        item=item,
        parsed=parsed,
        identity=identity,
        legacy_identity=legacy if legacy != identity else None,
        sha256=hashlib.sha256(raw).hexdigest(),
        compressed=codec.compress(raw),  # as codec.CODEC
        too_large=too_large,
        has_html=has_html,
        text_more=text_more,
    )


def _head_only(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    return raw[: end if end >= 0 else 65536][:65536] + b"\r\n\r\n"
