"""IMAP FETCH on the wire: sent and read with little machinery, its answer turned into
:class:`~mail.prepare.Incoming` emails; and the first batch of a pass fetched while
``deskq poll`` is still starting (:func:`prefetch`).

Light on purpose (imapclient, the config and the parse pipeline; no database layer):
the early connection's thread (mail.imapconn) runs :func:`prefetch` while the main
thread imports SQLAlchemy, so it must not wait on those imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError

from mail import pipeline
from mail.imapconn import ImapError, Selected
from mail.prepare import STORE_LIMIT, Incoming
from store import peek
from store.config import MailboxSettings, Settings


class ServerBye(IMAPClientAbortError):  # type: ignore[misc]
    """The server ended the connection with a BYE in the middle of an answer."""


FETCH_ITEMS = "(UID INTERNALDATE BODY.PEEK[])"
SIZE_ITEMS = "(UID RFC822.SIZE)"


def send_fetch(client: IMAPClient, uids: str, items: str) -> bytes:
    """Send ``UID FETCH`` without waiting: its tag, for :func:`read_fetch`."""
    imap = client._imap
    tag: bytes = imap._new_tag()
    imap.send(b"%s UID FETCH %s %s\r\n" % (tag, uids.encode("ascii"), items.encode("ascii")))
    return tag


def read_fetch(client: IMAPClient, tag: bytes, name: str) -> list[Any]:
    """The data of the FETCH sent as ``tag``: what ``imaplib.IMAP4.uid("FETCH", ...)``
    returns, read with less machinery.

    imaplib matches several regular expressions against every line and files every
    response by type; for a FETCH of thousands of messages that is most of the
    client's time (0.42 of 0.48 s for 10,000 messages, against 0.02 s here). This
    reads lines and literals with imaplib's own ``_get_line`` and ``read`` (same EOF,
    line length and timeout rules). Like imaplib it returns the untagged FETCH
    responses as a tuple (text, literal) per literal, then the text after it; the
    texts keep the response's ``N FETCH (`` (imaplib drops ``FETCH``). Other
    responses (EXISTS, EXPUNGE, RECENT) are dropped: the next SEARCH sees their
    effect. A NO or BAD raises :class:`ImapError`, a BYE imapclient's abort error.
    """
    imap = client._imap
    data: list[Any] = []
    try:
        while True:
            line = imap._get_line()
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1 :].split(b" ", 1)[0].upper()
                if status != b"OK":
                    raise ImapError(f"mailbox {name!r}: FETCH failed: {line!r}"[:300])
                return data
            if line[:5].upper() == b"* BYE":
                raise ServerBye(f"server closed the connection: {line!r}"[:300])
            wanted = _UNTAGGED_FETCH.match(line) is not None
            text = line[2:] if line.startswith(b"* ") else line
            while text.endswith(b"}") and (literal := _LITERAL.search(text)) is not None:
                size = int(literal.group(1))
                body = imap.read(size)
                if len(body) != size:
                    raise IMAPClientAbortError(f"connection closed in a {size}-byte literal")
                if wanted:
                    data.append((text, body))
                text = imap._get_line()  # the response goes on after the literal
            if wanted:
                data.append(text)
    finally:
        imap.tagged_commands.pop(tag, None)


def uid_set(uids: list[int]) -> str:
    return ",".join(map(str, uids))


_UNTAGGED_FETCH = re.compile(rb"\* \d+ FETCH\b", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(\d+)\}$")
_UID = re.compile(rb"\bUID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)


_MONTHS = {
    m: i
    for i, m in enumerate(
        (
            b"jan",
            b"feb",
            b"mar",
            b"apr",
            b"may",
            b"jun",
            b"jul",
            b"aug",
            b"sep",
            b"oct",
            b"nov",
            b"dec",
        ),
        start=1,
    )
}
_DATE_PARTS = re.compile(
    rb"(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)


def internaldate(value: bytes) -> datetime | None:
    """An IMAP INTERNALDATE ("24-Nov-2026 09:15:02 +0100") as a UTC datetime.

    Parsed by hand: strptime's month names follow the process locale.
    """
    m = _DATE_PARTS.search(value)
    month = _MONTHS.get(m.group(2).lower()) if m else None
    if m is None or month is None:
        return None
    day, year, hour, minute, second = (int(m.group(i)) for i in (1, 3, 4, 5, 6))
    offset = timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
    try:
        local = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        return local - offset if m.group(7) == b"+" else local + offset
    except (ValueError, OverflowError):  # e.g. 31-Feb, or year 9999 with a negative offset
        return None


def incoming_from(
    chunk: list[int], data: list[Any], m: MailboxSettings, uidvalidity: int | None
) -> list[Incoming]:
    """The messages of a FETCH of ``chunk`` (BODY.PEEK[]: reading marks nothing), in UID
    order; a UID the answer lacks is left out.

    The response is read by :func:`read_fetch`: imapclient's parser costs four
    times the whole FETCH, imaplib's twice, and only two fields are needed here.
    """
    found: dict[int, tuple[bytes, datetime | None]] = {}
    pending: tuple[bytes, bytes] | None = None  # (text around the body, body)
    for part in [*data, b""]:
        if pending is not None and not isinstance(part, tuple):
            # The item ends here; UID and INTERNALDATE may come before or after the
            # body (the server chooses the order).
            text = pending[0] + (part if isinstance(part, bytes) else b"")
            uid, date = _UID.search(text), _INTERNALDATE.search(text)
            if uid is not None:
                when = internaldate(date.group(1)) if date else None
                found[int(uid.group(1))] = (pending[1], when)
            pending = None
        if isinstance(part, tuple) and len(part) >= 2 and b"BODY[]" in part[0]:
            pending = (part[0], part[1])
    return [
        Incoming(
            raw=found[uid][0],
            mailbox=m.name,
            folder=m.folder,
            uidvalidity=uidvalidity,
            uid=uid,
            received_at=found[uid][1],
        )
        for uid in chunk
        if uid in found
    ]


def fetch_sizes(client: IMAPClient, uids: list[int], name: str) -> dict[int, int]:
    """RFC822.SIZE of ``uids`` (sorted), from the server's index: no message is read."""
    sizes: dict[int, int] = {}
    tag = send_fetch(client, f"{uids[0]}:{uids[-1]}", SIZE_ITEMS)
    for text in read_fetch(client, tag, name):
        if isinstance(text, bytes):
            uid, size = _UID.search(text), _SIZE.search(text)
            if uid is not None and size is not None:
                sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


def chunk_bounds(
    settings: Settings, uids: list[int], sizes: dict[int, int], store_limit: int = STORE_LIMIT
) -> list[list[int]]:
    """``uids`` cut into the batches a pass fetches, parses and commits one by one
    (one over ``store_limit`` alone in its batch: it is not fetched)."""
    ingest = settings.ingest
    limit = min(ingest.batch_bytes, store_limit)
    return [
        uids[start:end]
        for start, end in pipeline.batch_bounds(
            [sizes.get(uid, 0) for uid in uids], ingest.batch_size, limit
        )
    ]


@dataclass
class Prefetched:
    """A pass's start, done early: its SEARCH, the sizes, its first batch fetched and
    being parsed. Valid only for the sync state it was made from (``fits``)."""

    uidvalidity: int
    last: int
    uids: list[int]
    sizes: dict[int, int]
    first: list[Incoming]
    parsing: pipeline.Pending

    def fits(self, uidvalidity: int | None, last: int) -> bool:
        return (uidvalidity, last) == (self.uidvalidity, self.last)

    def cancel(self) -> None:
        self.parsing.cancel()


def prefetch(
    settings: Settings, m: MailboxSettings, client: IMAPClient, selected: Selected
) -> Prefetched | None:
    """Start ``m``'s first pass on ``client`` (just selected): while ``deskq poll``
    imports the database layer, the parse worker would otherwise wait idle.

    Only with a sync state read without the database layer (:mod:`store.peek`: SQLite)
    and a first batch big enough for the worker; reads only (SEARCH, sizes, FETCH
    BODY.PEEK[]). The pass takes it only if its own reading of the state agrees
    (:meth:`Prefetched.fits`). Raises what the server answered, the connection then
    being in doubt.
    """
    state = peek.sync_state(settings.database.url, m.name, m.folder)
    if state is None or state[0] not in (None, selected.uidvalidity):
        return None
    last = state[1]
    uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
    if len(uids) < pipeline.POOL_THRESHOLD:
        return None
    sizes = fetch_sizes(client, uids, m.name)
    first = chunk_bounds(settings, uids, sizes)[0]
    if len(first) < pipeline.POOL_THRESHOLD or any(
        sizes.get(uid, 0) > STORE_LIMIT for uid in first
    ):
        return None
    tag = send_fetch(client, uid_set(first), FETCH_ITEMS)
    items = incoming_from(first, read_fetch(client, tag, m.name), m, selected.uidvalidity)
    if len(items) != len(first):
        return None  # expunged meanwhile: the pass sees to it
    parsing = pipeline.submit(items, settings.ingest.max_message_bytes)
    return Prefetched(selected.uidvalidity, last, uids, sizes, items, parsing)
