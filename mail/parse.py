"""Turning raw email bytes into what deskq stores, without ever raising.

Real mail is broken in every way: wrong or unknown charsets, bad transfer encodings,
defective multiparts, hostile file names. :func:`parse` always returns a
:class:`ParsedMessage`; what went wrong is listed in ``problems`` and, when nothing
usable could be read at all, ``fatal`` says why (the ticket is then flagged
``parse-error``, its raw source kept).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import html as htmllib
import logging
import mimetypes
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from mail.mimeparse import message_from_bytes

log = logging.getLogger(__name__)

MAX_FILENAME_BYTES = 200
# A subject is a line; beyond this it is garbage or an attack (the raw source keeps it).
MAX_SUBJECT = 2000
_MSGID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EXTENSIONS = {
    "image/jpg": ".jpg",
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
    "message/rfc822": ".eml",
}
_FILENAME_BAD = re.compile(
    r"[\x00-\x1f\x7f-\x9f/\\:*?\"<>|\u061c\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]"
)


@dataclass
class AttachmentPart:
    """A file found in a message."""

    filename: str
    media_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class ParsedMessage:
    """The parts of an email deskq uses, decoded to clean text."""

    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    subject: str = ""
    from_name: str = ""
    from_addr: str = ""
    to: tuple[tuple[str, str], ...] = ()
    cc: tuple[tuple[str, str], ...] = ()
    delivered_to: tuple[str, ...] = ()
    x_original_to: tuple[str, ...] = ()
    date: datetime | None = None
    text: str = ""
    html: str | None = None
    attachments: list[AttachmentPart] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    report_message_ids: tuple[str, ...] = ()
    is_delivery_report: bool = False
    problems: list[str] = field(default_factory=list)
    fatal: str | None = None

    def header(self, name: str) -> str:
        """A header's first value ('' if absent), by case-insensitive name."""
        return self.headers.get(name.lower(), "")


# Headers kept in ParsedMessage.headers (the loop checks and threading read them).
KEPT_HEADERS = (
    "auto-submitted",
    "precedence",
    "x-auto-response-suppress",
    "list-id",
    "list-unsubscribe",
    "return-path",
    "x-deskq-ticket",
    "x-deskq-origin",
    "content-type",
    "x-autoreply",
    "x-autorespond",
    "x-failed-recipients",
    "feedback-id",
    "reply-to",
)


def clean_text(value: str) -> str:
    """Text safe for any database: no NUL, no lone surrogates, normalised newlines."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    with contextlib.suppress(UnicodeEncodeError):
        value.encode("utf-8")
        return value
    with contextlib.suppress(UnicodeEncodeError):  # escaped raw bytes: decode them
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _ANY_SURROGATE.sub("\ufffd", value)  # lone surrogates (e.g. from UTF-7)


_ANY_SURROGATE = re.compile("[\ud800-\udfff]")


def one_line(value: str) -> str:
    """A header value unfolded onto one line, control characters removed."""
    return " ".join(_CONTROL.sub("", clean_text(value)).split())


# Real Message-IDs are well under 100 characters. Longer ones are cut (the same way
# wherever one is read, so threading still matches): an index entry has a size limit
# (PostgreSQL: 2,704 bytes, which 400 characters of 4-byte UTF-8 stay under).
MAX_MESSAGE_ID = 400


def _bounded_id(value: str) -> str:
    return value if len(value) <= MAX_MESSAGE_ID else value[: MAX_MESSAGE_ID - 1] + ">"


def message_ids(value: str) -> tuple[str, ...]:
    """Every ``<id>`` in a Message-ID / In-Reply-To / References value, in order."""
    return tuple(dict.fromkeys(map(_bounded_id, _MSGID.findall(value or ""))))


def normalise_message_id(value: str) -> str | None:
    """One Message-ID in ``<...>`` form, or None."""
    found = message_ids(value)
    if found:
        return found[0]
    value = one_line(value).strip("<> ")
    return _bounded_id(f"<{value}>") if value and " " not in value else None


def safe_filename(name: str, media_type: str, index: int) -> str:
    """A file name with no path, no control or bidi characters, of bounded length."""
    name = unicodedata.normalize("NFC", clean_text(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _FILENAME_BAD.sub("_", name).strip(" .")
    if not name:
        ext = _EXTENSIONS.get(media_type) or mimetypes.guess_extension(media_type or "") or ".bin"
        name = f"attachment-{index}{ext}"
    if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and 0 < len(ext) <= 10 else ""
        budget = MAX_FILENAME_BYTES - len(ext.encode()) - 1
        stem = (stem if ext else name).encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = f"{stem}.{ext}" if ext else stem
    return name


def decode_bytes(
    data: bytes, declared: str | None, problems: list[str], what: str, hint: Hint = None
) -> str:
    """Decode ``data``: the declared charset if it works, else UTF-8, else ``hint`` (a
    charset declared elsewhere in the same message), else a guess (see :func:`guess`)."""
    if declared:
        try:
            return data.decode(declared)
        except LookupError:
            problems.append(f"{what}: unknown charset {declared!r}")
        except UnicodeDecodeError:
            problems.append(f"{what}: not valid {declared}")
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if isinstance(hint, CharsetHint):
        hint = hint.value
    if hint and hint != declared:
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            return data.decode(hint)
    return guess(data)


_LATIN_LETTER = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def guess(data: bytes) -> str:
    """Text of undeclared 8-bit ``data``.

    Detectors guess badly on the short strings mail is made of (a subject, a name:
    "B\xfcro" comes out as Chinese), so short data is judged by shape: accented
    letters sprinkled inside ASCII words are Western European (cp1252); words made
    wholly of 8-bit bytes are Cyrillic, cp1251 or KOI8-R, whichever gives mostly
    lower-case letters. Longer data goes to charset-normalizer.
    """
    high = [i for i, b in enumerate(data) if b >= 0x80]
    if len(high) >= 64:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is not None:
            return str(best)
    beside_latin = sum(
        1
        for i in high
        if (i > 0 and data[i - 1] in _LATIN_LETTER)
        or (i + 1 < len(data) and data[i + 1] in _LATIN_LETTER)
    )
    if beside_latin * 2 >= len(high):
        return data.decode("cp1252", "replace")
    candidates = [data.decode(c, "replace") for c in ("cp1251", "koi8_r")]
    return max(candidates, key=lambda t: sum(c.islower() for c in t if c >= "\u0400"))


# "Name <a@b>", "<a@b>" or "a@b" alone: the common case, without getaddresses' parser.
_SIMPLE_ADDRESS = re.compile(
    r"\s*(?:([^<>\"(),;:@\\\[\]]*?)\s*<([^<>\s@\"]+@[^<>\s\"]+)>"
    r"|([^<>\s\"(),;:@\\\[\]]+@[^<>\s\"(),;:\\\[\]]+))\s*$"
)
_ORIGIN_HEADER = re.compile(
    rb"^(from|to|cc|date|subject|message-id)[ \t]*:(.*(?:\n[ \t].*)*)", re.I | re.M
)
_RECEIVED_HEADER = re.compile(rb"^received[ \t]*:(.*(?:\n[ \t].*)*)", re.I | re.M)
_SURROGATES = re.compile("[\udc80-\udcff]")


def has_8bit(value: str) -> bool:
    """Whether ``value`` carries raw 8-bit bytes (surrogate-escaped by the parser)."""
    return not value.isascii() and _SURROGATES.search(value) is not None


def decode_header_value(raw: str, hint: Hint = None) -> str:
    """A header value as text: RFC 2047 words decoded, undeclared 8-bit detected, unfolded.

    The parser reads headers raw (``policy.compat32``, ten times faster than
    ``policy.default``); this gives the same text as ``policy.default`` for valid
    headers (a hypothesis test keeps them in step) and never raises on broken ones.
    """
    if has_8bit(raw):
        raw = decode_bytes(raw.encode("utf-8", "surrogateescape"), None, [], "header", hint)
    if "=?" in raw:
        raw = _decode_words(raw)
    return one_line(raw)


def _decode_words(raw: str) -> str:
    try:
        parts = decode_header(raw)
    except (HeaderParseError, ValueError, LookupError, AssertionError):
        return raw
    try:
        return str(make_header(parts))
    except (LookupError, UnicodeDecodeError, ValueError, HeaderParseError):
        pass
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            known = charset if charset and charset != "unknown-8bit" else None
            out.append(decode_bytes(chunk, known, [], "header"))
        else:
            out.append(chunk)
    return "".join(out)


def _raw_headers(msg: Message) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in msg.raw_items():
        found.setdefault(key.lower(), []).append(str(value))
    return found


def _header(headers: dict[str, list[str]], name: str, hint: Hint = None) -> str:
    """A header's first value, decoded ('' if absent)."""
    values = headers.get(name)
    return decode_header_value(values[0], hint) if values else ""


_NEEDS_QUOTES = re.compile(r'[][\\()<>@,:;".]')
_QUOTED_SPECIALS = re.compile(r'[\\"]')


def display_address(name: str, address: str) -> str:
    """``Name <address>`` as people read it: what deskq stores and shows.

    Unlike ``email.utils.formataddr`` (which makes a header value) a name beyond ASCII
    stays readable instead of becoming an RFC 2047 word, and an internationalised
    address (RFC 6532) is not an error. Quotes as in a header where the name needs them,
    so ``getaddresses`` reads the text back into the same pair.
    """
    if not name:
        return address
    if _NEEDS_QUOTES.search(name):
        name = '"' + _QUOTED_SPECIALS.sub(r"\\\g<0>", name) + '"'
    return f"{name} <{address}>"


def display_addresses(pairs: Iterable[tuple[str, str]]) -> str:
    """A list of (name, address) pairs as one readable, comma-separated text."""
    return ", ".join(display_address(name, address) for name, address in pairs)


def _addresses(
    headers: dict[str, list[str]], name: str, hint: Hint = None
) -> tuple[tuple[str, str], ...]:
    out = []
    values = [v.replace("\r", " ").replace("\n", " ") for v in headers.get(name, [])]
    if not values:
        return ()
    simple = _SIMPLE_ADDRESS.match(values[0]) if len(values) == 1 else None
    if simple:
        pairs = [(simple.group(1) or "", simple.group(2) or simple.group(3))]
    else:
        pairs = getaddresses(values)
    for display, addr in pairs:
        addr = one_line(addr).strip("<>").lower()
        if "@" in addr and not has_8bit(addr):
            out.append((decode_header_value(display, hint), addr[:320]))
    return tuple(dict.fromkeys(out))


def _payload_text(part: Message, problems: list[str], hint: Hint = None) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"body undecodable ({exc})")
        data = None
    if not isinstance(data, bytes):
        raw = part.get_payload()
        return clean_text(raw if isinstance(raw, str) else "")
    charset = part.get_content_charset()
    return clean_text(decode_bytes(data, charset, problems, "body", hint))


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (paragraphs, lists and tables laid out).

    inscriptis does the layout; very large documents (where its layout engine gets
    slow) go through lxml's text extraction with line breaks at block elements.
    """
    try:
        if len(html) <= INSCRIPTIS_LIMIT:
            from inscriptis import get_text

            return str(get_text(html)).strip()
        return _lxml_text(html)
    except Exception:
        log.debug("HTML to text failed; stripping tags instead", exc_info=True)
        stripped = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", html)
        return htmllib.unescape(re.sub(r"<[^>]+>", " ", stripped)).strip()


INSCRIPTIS_LIMIT = 64 * 1024
_BLOCKS = (
    "p",
    "div",
    "br",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "blockquote",
    "pre",
    "hr",
)


def _lxml_text(html: str) -> str:
    import lxml.html

    root = lxml.html.document_fromstring(html)
    for bad in root.xpath("//script|//style|//head"):
        bad.drop_tree()
    for element in root.iter(*_BLOCKS):
        element.tail = "\n" + (element.tail or "")
        if element.tag == "li":
            element.text = "* " + (element.text or "")
    text = root.text_content()
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _walk(part: Message, found: list[tuple[Message, str, bool]]) -> None:
    """Leaf parts in order, each with its content type and whether it is an attached
    message (kept whole, not descended into)."""
    ctype = part.get_content_type()
    if ctype == "message/rfc822" or ctype == "message/global":
        found.append((part, ctype, True))
        return
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _walk(sub, found)
        return
    found.append((part, ctype, False))


def _is_attachment(part: Message, ctype: str) -> bool:
    if ctype not in ("text/plain", "text/html"):
        return True
    disposition = str(part.get("Content-Disposition") or "")
    if not disposition and "name=" not in str(part.get("Content-Type") or ""):
        return False
    return disposition.split(";")[0].strip().lower() == "attachment" or bool(part.get_filename())


def _bodies_and_attachments(msg: Message, p: ParsedMessage, hint: Hint) -> None:
    leaves: list[tuple[Message, str, bool]] = []
    _walk(msg, leaves)
    plain: list[str] = []
    html: list[str] = []
    for index, (part, ctype, attached) in enumerate(leaves, start=1):
        if attached:
            whole = _attached_bytes(part)
            inner_subject = ""
            with contextlib.suppress(Exception):
                inner = _raw_headers(message_from_bytes(whole, True))
                inner_subject = _header(inner, "subject", hint)
                if p.is_delivery_report:  # the bounced original, returned whole
                    p.report_message_ids += message_ids(_header(inner, "message-id"))
            name = _filename(part, p.problems) or (inner_subject + ".eml" if inner_subject else "")
            p.attachments.append(
                AttachmentPart(
                    safe_filename(name, ctype, index) or f"message-{index}.eml", ctype, whole
                )
            )
            continue
        if ctype in ("text/rfc822-headers", "message/delivery-status") or (
            p.is_delivery_report and ctype.startswith("message/")
        ):
            text = _payload_text(part, p.problems)
            p.report_message_ids += message_ids(
                "\n".join(
                    line
                    for line in text.splitlines()
                    if line.lower().startswith(
                        ("message-id:", "original-message-id:", "x-original-message-id:")
                    )
                )
            )
        if not _is_attachment(part, ctype):
            (plain if ctype == "text/plain" else html).append(_payload_text(part, p.problems, hint))
            continue
        data: Any = None
        with contextlib.suppress(Exception):
            data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            p.problems.append(f"attachment {index}: undecodable content kept as text")
            raw = part.get_payload()
            data = (raw if isinstance(raw, str) else "").encode("utf-8", "surrogateescape")
        cid = part.get("Content-ID")
        disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        p.attachments.append(
            AttachmentPart(
                filename=safe_filename(_filename(part, p.problems), ctype, index),
                media_type=one_line(ctype)[:255],
                data=data,
                content_id=normalise_message_id(one_line(str(cid))) if cid else None,
                inline=disposition == "inline" or (cid is not None and disposition != "attachment"),
            )
        )
    p.text = "\n\n".join(t for t in plain if t.strip())
    if html:
        p.html = "\n".join(html)
        if not p.text.strip():
            p.text = clean_text(html_to_text(p.html))


def _filename(part: Message, problems: list[str]) -> str:
    try:
        # Raw 8-bit parameter values are decoded before the parameters are parsed
        # (compat32 would turn them into U+FFFD otherwise).
        probe = Message()
        for key, value in part.raw_items():
            if key.lower() in ("content-disposition", "content-type"):
                value = str(value)
                if has_8bit(value):
                    value = decode_bytes(value.encode("utf-8", "surrogateescape"), None, [], key)
                probe[key] = value
        return decode_header_value(str(probe.get_filename() or ""))
    except Exception as exc:  # noqa: BLE001
        problems.append(f"attachment name undecodable ({exc})")
        return ""


def _attached_bytes(part: Message) -> bytes:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        with contextlib.suppress(Exception):
            return payload[0].as_bytes(policy=policy.compat32)
    raw = part.get_payload(decode=True)
    return raw if isinstance(raw, bytes) else b""


def _parse_date(value: str, problems: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        problems.append(f"unreadable Date: {value[:60]!r}")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        problems.append(f"Date out of range: {value[:60]!r}")
        return None


def parse(raw: bytes) -> ParsedMessage:
    """Everything deskq needs from ``raw``; never raises (see ``problems`` and ``fatal``)."""
    p = ParsedMessage()
    try:
        msg = message_from_bytes(raw)
        _fill(msg, p)
    except Exception as exc:
        log.debug("parse failed", exc_info=True)
        p.fatal = f"{type(exc).__name__}: {exc}"[:500]
        with contextlib.suppress(Exception):
            head = _raw_headers(message_from_bytes(raw, True))
            p.subject = p.subject or _header(head, "subject")
            if not p.from_addr:
                found = _addresses(head, "from")
                if found:
                    p.from_name, p.from_addr = found[0]
            p.message_id = p.message_id or normalise_message_id(_header(head, "message-id"))
            p.subject = p.subject[:MAX_SUBJECT]
    return p


class CharsetHint:
    """The charset :func:`_charset_hint` finds, looked up on first use only."""

    def __init__(self, msg: Message) -> None:
        self.msg: Message | None = msg
        self._value: str | None = None

    @property
    def value(self) -> str | None:
        if self.msg is not None:
            self._value, self.msg = _charset_hint(self.msg), None
        return self._value


Hint = str | CharsetHint | None


def _charset_hint(msg: Message) -> str | None:
    """A charset declared somewhere in the message: the best guess for its undeclared bytes."""
    for part in msg.walk():
        charset = part.get_content_charset()
        if charset and charset not in ("us-ascii", "ascii", "utf-8", "unknown-8bit"):
            with contextlib.suppress(LookupError):
                codecs.lookup(charset)
                return charset
    return None


def _fill(msg: Message, p: ParsedMessage) -> None:
    for defect in msg.defects:
        p.problems.append(f"defect: {type(defect).__name__}")
    h = _raw_headers(msg)
    hint = CharsetHint(msg)  # walks the parts only if some text needs it
    p.message_id = normalise_message_id(_header(h, "message-id"))
    p.in_reply_to = message_ids(_header(h, "in-reply-to"))
    p.references = message_ids(_header(h, "references"))
    p.subject = _header(h, "subject", hint)
    if len(p.subject) > MAX_SUBJECT:
        p.problems.append(f"subject of {len(p.subject):,} characters cut to {MAX_SUBJECT:,}")
        p.subject = p.subject[:MAX_SUBJECT]
    senders = _addresses(h, "from", hint) or _addresses(h, "sender", hint)
    if senders:
        p.from_name, p.from_addr = senders[0]
    else:
        p.problems.append("no sender address")
    p.to, p.cc = _addresses(h, "to", hint), _addresses(h, "cc", hint)
    p.delivered_to = tuple(a for _, a in _addresses(h, "delivered-to"))
    p.x_original_to = tuple(a for _, a in _addresses(h, "x-original-to"))
    p.date = _parse_date(_header(h, "date"), p.problems)
    for name in KEPT_HEADERS:
        if name in h:
            p.headers[name] = _header(h, name)
    ctype = msg.get_content_type()
    p.is_delivery_report = (
        ctype == "multipart/report"
        and "report-type" in (p.headers.get("content-type", "").lower())
        and any(
            k in p.headers.get("content-type", "").lower()
            for k in ("delivery-status", "disposition-notification")
        )
    )
    _bodies_and_attachments(msg, p, hint)


def _without_trailing_blanks(body: bytes) -> bytes:
    """Every line of ``body`` without its trailing spaces, tabs and carriage returns.

    The same as ``re.sub(rb"[ \\t\\r]+\\n", b"\\n", body)`` for a body that ends in no
    blank, so CRLF and LF copies of a body come out the same. Splitting on the one
    byte is fast; the expression, or even searching for two-byte pairs such as
    ``b" \\n"``, costs several times as much on long prose.
    """
    lines = body.split(b"\n")
    stripped = [line.rstrip(b" \t\r") for line in lines]
    return body if stripped == lines else b"\n".join(stripped)


_HEAD_END = re.compile(rb"\n\r?\n")


def content_identity(raw: bytes, message_id: str | None, *, first_received: bool = True) -> str:
    """The identity of an email whatever route it took: Message-ID plus a content hash.

    The hash covers the body and the origin headers (From, To, Cc, Date, Subject,
    Message-ID), never delivery headers (Received, Delivered-To, Return-Path...), and
    normalises line endings so IMAP (CRLF) and Maildir (LF) copies agree.
    """
    # The header block ends at the first empty line, LF or CRLF. Line ends need no
    # rewriting: header values are compared with their whitespace (CR included)
    # collapsed, and the body's CRs go with its trailing blanks.
    end = _HEAD_END.search(raw)
    head, body = (raw, b"") if end is None else (raw[: end.start()], raw[end.end() :])
    origin = [
        m.group(1).lower() + b":" + b" ".join(m.group(2).split())
        for m in _ORIGIN_HEADER.finditer(head)
    ]
    digest = hashlib.sha256()
    if not origin and not message_id:
        # Nothing identifies the sender's copy: the whole header block must.
        origin = [b" ".join(head.split())]
    elif first_received and not message_id and not any(i.startswith(b"date:") for i in origin):
        # No Message-ID and no Date (devices: printers, UPSes, NAS boxes): the same
        # alert a week later would look like the same email. The first Received (the
        # bottom one, stamped where the email entered the mail system) tells them
        # apart, and is the same on every copy an alias or a second mailbox gets.
        # (first_received=False: the identity such email had before, to recognise it.)
        received = _RECEIVED_HEADER.findall(head)
        if received:
            origin.append(b"received:" + b" ".join(received[-1].split()))
    for item in sorted(origin):
        digest.update(item + b"\n")
    digest.update(b"\n")
    digest.update(_without_trailing_blanks(body.rstrip()))
    return f"{(message_id or '<>')[:60]}|{digest.hexdigest()}"
