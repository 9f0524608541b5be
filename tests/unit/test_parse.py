"""mail/parse.py on hand-built, generated and real-world email: parse() never raises,
always yields clean text, and reads what a help desk needs from broken mail."""

# ruff: noqa: RUF001  (Cyrillic test data is meant to look like Latin letters)

from __future__ import annotations

import base64
import unicodedata
from datetime import UTC, datetime
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail.parse import (
    MAX_FILENAME_BYTES,
    MAX_MESSAGE_ID,
    MAX_SUBJECT,
    ParsedMessage,
    clean_text,
    content_identity,
    decode_bytes,
    display_address,
    display_addresses,
    parse,
    safe_filename,
)
from tests.support import CORPUS

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def eml(*headers: str | bytes, body: bytes | str = b"Hello,\nthe printer is broken.\n") -> bytes:
    """An email from header lines (str or raw bytes) and a body, with LF line endings."""
    lines = [h.encode() if isinstance(h, str) else h for h in headers]
    if not any(line.lower().startswith(b"from:") for line in lines):
        lines.insert(0, b"From: Bob Example <bob@corp.example>")
    data = body.encode() if isinstance(body, str) else body
    return b"\n".join(lines) + b"\n\n" + data


def multipart(*parts: bytes, boundary: str = "BOUNDARY", close: bool = True) -> bytes:
    """A multipart body (headers of the container not included)."""
    out = b"This is a multi-part message in MIME format.\n"
    for part in parts:
        out += f"--{boundary}\n".encode() + part + b"\n"
    if close:
        out += f"--{boundary}--\n".encode()
    return out


def mp_header(subtype: str, boundary: str = "BOUNDARY") -> str:
    return f'Content-Type: multipart/{subtype}; boundary="{boundary}"'


def stored_strings(p: ParsedMessage) -> list[str]:
    """Every string of a ParsedMessage that deskq writes into a text column.

    (Content-ID and media type are checked by their own test below.)
    """
    values = [p.subject, p.from_name, p.from_addr, p.text, p.html or "", p.message_id or ""]
    values += [*p.in_reply_to, *p.references, *p.delivered_to, *p.x_original_to]
    values += [x for pair in (*p.to, *p.cc) for x in pair]
    values += [*p.headers.values(), *p.report_message_ids]
    values += [a.filename for a in p.attachments]
    return values


def assert_db_safe(p: ParsedMessage) -> None:
    for value in stored_strings(p):
        assert isinstance(value, str)
        assert "\x00" not in value, value
        value.encode("utf-8")  # no lone surrogates


# --------------------------------------------------------------------------- bodies


def test_plain_message() -> None:
    p = parse(
        eml(
            "To: IT Help <it@corp.example>",
            "Cc: carol@corp.example, Dave <DAVE@Corp.Example>",
            "Subject: Printer broken",
            "Message-ID: <m1@corp.example>",
            "Date: Mon, 02 Jan 2023 10:00:00 +0200",
        )
    )
    assert p.fatal is None
    assert p.subject == "Printer broken"
    assert (p.from_name, p.from_addr) == ("Bob Example", "bob@corp.example")
    assert p.to == (("IT Help", "it@corp.example"),)
    assert p.cc == (("", "carol@corp.example"), ("Dave", "dave@corp.example"))
    assert p.text == "Hello,\nthe printer is broken.\n"
    assert p.html is None
    assert p.attachments == []
    assert p.date == datetime(2023, 1, 2, 8, 0, tzinfo=UTC)


def test_multipart_alternative_prefers_text_and_keeps_html() -> None:
    body = multipart(
        b"Content-Type: text/plain; charset=utf-8\n\nPlain version\n",
        b"Content-Type: text/html; charset=utf-8\n\n<p>HTML <b>version</b></p>\n",
    )
    p = parse(eml("Subject: alt", "MIME-Version: 1.0", mp_header("alternative"), body=body))
    assert p.text.strip() == "Plain version"
    assert p.html is not None and "<b>version</b>" in p.html
    assert p.attachments == []


@pytest.mark.parametrize("filler", [0, 3000], ids=["small", "large"])
def test_html_only_mail_gets_readable_text(filler: int) -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<p>First paragraph.</p><p>Second paragraph.</p>"
        "<ul><li>restart the router</li><li>call the helpdesk</li></ul>"
        + "<p>more &amp; more</p>" * filler
        + "<script>var secret = 1;</script></body></html>"
    )
    p = parse(eml("Subject: html", "Content-Type: text/html; charset=utf-8", body=html))
    assert p.html is not None and "<li>" in p.html
    lines = [line.strip() for line in p.text.splitlines() if line.strip()]
    assert "<" not in p.text and ">" not in p.text
    assert "color" not in p.text and "secret" not in p.text  # no style sheets or scripts
    assert "&amp;" not in p.text
    assert lines[0] == "First paragraph."
    assert lines[1] == "Second paragraph."
    # list items stay separate lines
    assert lines[2].endswith("restart the router")
    assert lines[3].endswith("call the helpdesk")
    if filler:
        assert lines[4:] == ["more & more"] * filler


def test_latin1_body_declared_utf8_is_decoded_and_reported() -> None:
    text = "Grüße aus Köln, die Straße ist gesperrt."
    p = parse(
        eml(
            "Subject: x",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            body=text.encode("latin-1"),
        )
    )
    assert p.text == text
    assert any("not valid utf-8" in problem for problem in p.problems)


def test_unknown_charset_name_falls_back() -> None:
    text = "Grüße aus Köln"
    p = parse(
        eml(
            "Subject: x",
            "Content-Type: text/plain; charset=x-no-such-charset",
            "Content-Transfer-Encoding: 8bit",
            body=text.encode("utf-8"),
        )
    )
    assert p.text == text
    assert any("unknown charset 'x-no-such-charset'" in problem for problem in p.problems)


KOI8_BODY = (
    "Здравствуйте!\n\nУ меня не работает почта, пароль не принимается. Принтер на третьем "
    "этаже тоже не печатает уже второй день. Помогите, пожалуйста.\n\nСпасибо,\nИван\n"
)


@pytest.mark.parametrize(
    ("text", "charset"),
    [
        (KOI8_BODY, "koi8-r"),
        (KOI8_BODY, "cp1251"),
        (
            "Bonjour,\n\nJe n'arrive plus à accéder à ma messagerie depuis ce matin. Le mot de "
            "passe est refusé et l'écran affiche « accès refusé ». Pouvez-vous m'aider ?\n\n"
            "Merci d'avance,\nRené\n",
            "cp1252",
        ),
    ],
)
def test_missing_charset_with_8bit_body_is_detected(text: str, charset: str) -> None:
    p = parse(
        eml(
            "Subject: x",
            "Content-Type: text/plain",
            "Content-Transfer-Encoding: 8bit",
            body=text.encode(charset),
        )
    )
    assert p.fatal is None
    assert p.text == text


def test_missing_charset_german_cp1252_body_is_detected() -> None:
    text = (
        "Hallo,\n\nder Drucker im zweiten Stock druckt seit gestern nur noch leere Seiten. "
        "Können Sie bitte jemanden vorbeischicken? Vielen Dank für Ihre Hilfe.\n\nGrüße\nJürgen"
    )
    p = parse(
        eml(
            "Subject: x",
            "Content-Type: text/plain",
            "Content-Transfer-Encoding: 8bit",
            body=text.encode("cp1252"),
        )
    )
    assert p.text == text


@pytest.mark.parametrize(
    ("subject", "charset"),
    [
        ("Drucker geht nicht: Grüße aus Köln", "utf-8"),
        ("Узнай как зарабатывать от 1000$ в неделю, не выходя из дома!", "cp1251"),
    ],
)
def test_raw_8bit_subject_without_encoding_is_decoded(subject: str, charset: str) -> None:
    p = parse(eml(b"Subject: " + subject.encode(charset)))
    assert p.subject == subject


@pytest.mark.parametrize(
    ("subject", "charset"),
    [("Drucker im Büro funktioniert nicht", "latin-1"), ("Принтер не работает", "koi8-r")],
)
def test_short_raw_8bit_subject_is_readable(subject: str, charset: str) -> None:
    p = parse(eml(b"Subject: " + subject.encode(charset)))
    assert p.subject == subject


def test_undeclared_8bit_header_uses_a_charset_declared_elsewhere() -> None:
    """Bytes that are no UTF-8 in a header are read in the charset the body declares."""
    subject, name = "Принтер сломан", "Пётр Иванов"
    p = parse(
        eml(
            b"Subject: " + subject.encode("iso-8859-5"),
            b"From: " + name.encode("iso-8859-5") + b" <petr@corp.example>",
            "Content-Type: text/plain; charset=iso-8859-5",
            body="Добрый день".encode("iso-8859-5"),
        )
    )
    assert (p.subject, p.from_name, p.text.strip()) == (subject, name, "Добрый день")
    # Without a declared charset the same bytes are guessed (and come out differently).
    assert parse(eml(b"Subject: " + subject.encode("iso-8859-5"))).subject != subject


def test_rfc2047_subjects() -> None:
    b64 = base64.b64encode("Grüße 日本".encode()).decode()
    p = parse(eml(f"Subject: =?utf-8?B?{b64}?=\n =?iso-8859-1?Q?caf=E9_cr=E8me?= (fin)"))
    assert p.subject == "Grüße 日本café crème (fin)"
    p = parse(eml("Subject: =?koi8-r?B?8NLJztTF0g==?= broken"))
    assert p.subject == "Принтер broken"
    # an unknown charset in an encoded word never breaks parsing
    p = parse(eml("Subject: =?x-bogus?Q?abc?= tail"))
    assert p.fatal is None and "tail" in p.subject


def test_broken_base64_body_and_attachment() -> None:
    body = multipart(
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        b"SGVsbG8gV29ybGQ!!!*&^\n",
        b"Content-Type: application/pdf; name=report.pdf\n"
        b"Content-Transfer-Encoding: base64\n\nJVBERi0x%%%==garbage\n",
    )
    p = parse(eml("Subject: b64", "MIME-Version: 1.0", mp_header("mixed"), body=body))
    assert p.fatal is None
    assert p.text.startswith("Hello World")
    assert [a.filename for a in p.attachments] == ["report.pdf"]
    assert p.attachments[0].data.startswith(b"%PDF-1")


def test_multipart_without_close_boundary_keeps_every_part() -> None:
    body = multipart(
        b"Content-Type: text/plain\n\nhello there\n",
        b"Content-Type: text/plain; name=notes.txt\nContent-Disposition: attachment\n\n"
        b"file content\n",
        close=False,
    )
    p = parse(eml("Subject: defect", "MIME-Version: 1.0", mp_header("mixed"), body=body))
    assert p.fatal is None
    assert p.text.strip() == "hello there"
    assert [(a.filename, a.data.strip()) for a in p.attachments] == [("notes.txt", b"file content")]
    assert any("CloseBoundaryNotFound" in problem for problem in p.problems)


def test_attached_message_is_kept_whole_as_eml() -> None:
    inner = (
        b"From: carol@partner.example\nTo: bob@corp.example\nSubject: Original question\n"
        b"Message-ID: <inner@partner.example>\n\ninner body\n"
    )
    body = multipart(
        b"Content-Type: text/plain\n\nsee the attached mail\n",
        b"Content-Type: message/rfc822\n\n" + inner,
    )
    p = parse(eml("Subject: Fwd", "MIME-Version: 1.0", mp_header("mixed"), body=body))
    assert p.text.strip() == "see the attached mail"  # the inner body is not mixed in
    (att,) = p.attachments
    assert att.media_type == "message/rfc822"
    assert att.filename == "Original question.eml"
    assert att.data.replace(b"\r\n", b"\n").strip() == inner.strip()
    assert p.message_id is None  # the inner Message-ID is not the outer one


def test_inline_image_with_content_id() -> None:
    body = multipart(
        b'Content-Type: text/html; charset=utf-8\n\n<p>logo: <img src="cid:logo123@x"></p>\n',
        b"Content-Type: image/png\nContent-Transfer-Encoding: base64\n"
        b"Content-ID: <logo123@x>\n\niVBORw0KGgo=\n",
        b"Content-Type: image/png; name=chart.png\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=chart.png\nContent-ID: <chart@x>\n\n"
        b"iVBORw0KGgo=\n",
    )
    p = parse(eml("Subject: img", "MIME-Version: 1.0", mp_header("related"), body=body))
    logo, chart = p.attachments
    assert (logo.inline, logo.content_id, logo.media_type) == (True, "<logo123@x>", "image/png")
    assert logo.data == b"\x89PNG\r\n\x1a\n"
    assert logo.filename == "attachment-2.png"
    assert (chart.inline, chart.filename) == (False, "chart.png")


def _with_attachment(disposition: bytes) -> ParsedMessage:
    body = multipart(
        b"Content-Type: text/plain\n\nsee attachment\n",
        b"Content-Type: application/octet-stream\n" + disposition + b"\n\nDATA\n",
    )
    return parse(eml("Subject: att", "MIME-Version: 1.0", mp_header("mixed"), body=body))


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        (b'Content-Disposition: attachment; filename="../../etc/passwd"', "passwd"),
        (b'Content-Disposition: attachment; filename="C:\\\\evil\\\\x.exe"', "x.exe"),
        (b"Content-Disposition: attachment; filename*=utf-8''%E2%80%AEfdp.exe", "_fdp.exe"),
        (b'Content-Disposition: attachment; filename="=?utf-8?Q?r=C3=A9sum=C3=A9.pdf?="', None),
        (b"Content-Disposition: attachment", "attachment-2.bin"),
    ],
)
def test_attachment_names_from_mail_are_safe(disposition: bytes, expected: str | None) -> None:
    (att,) = _with_attachment(disposition).attachments
    assert "/" not in att.filename and "\\" not in att.filename
    if expected is not None:
        assert att.filename == expected
    else:
        assert att.filename == "résumé.pdf"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\evil\\x.exe", "x.exe"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("bad\x01\x07name\x1b\x7f\x85.pdf", "bad__name___.pdf"),
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),
        ("a\u2066b\u2069c\u202ad.txt", "a_b_c_d.txt"),
        ("what?<a>|b*:c.txt", "what__a__b__c.txt"),
        ("résumé.pdf", "résumé.pdf"),
    ],
)
def test_safe_filename_strips_paths_control_and_bidi(name: str, expected: str) -> None:
    assert safe_filename(name, "application/pdf", 1) == expected


def test_safe_filename_removes_every_bidi_control() -> None:
    name = safe_filename("a" + BIDI_CONTROLS + "b.pdf", "application/pdf", 1)
    assert not set(name) & set(BIDI_CONTROLS), ascii(name)


@pytest.mark.parametrize(
    ("name", "ext"),
    [("x" * 500 + ".pdf", ".pdf"), ("ü" * 300 + ".docx", ".docx"), ("日本" * 200, "")],
)
def test_safe_filename_bounds_long_names_keeping_extension(name: str, ext: str) -> None:
    result = safe_filename(name, "application/pdf", 1)
    assert 0 < len(result.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert result.endswith(ext)
    assert result.startswith(name[:20])
    assert "\ufffd" not in result  # never cut inside a UTF-8 sequence


@pytest.mark.parametrize(
    ("name", "media_type", "index", "expected"),
    [
        ("", "application/pdf", 3, "attachment-3.pdf"),
        ("", "image/png", 2, "attachment-2.png"),
        ("", "image/jpg", 4, "attachment-4.jpg"),
        ("", "message/rfc822", 5, "attachment-5.eml"),
        ("", "application/x-no-such-type", 1, "attachment-1.bin"),
        ("", "", 7, "attachment-7.bin"),
        (" .. ", "text/plain", 6, "attachment-6.txt"),
        ("////", "text/plain", 8, "attachment-8.txt"),
    ],
)
def test_safe_filename_empty_names(name: str, media_type: str, index: int, expected: str) -> None:
    assert safe_filename(name, media_type, index) == expected


# --------------------------------------------------------------------------- headers


def test_nul_bytes_are_removed() -> None:
    p = parse(
        eml(
            b"Subject: nul\x00here",
            b"From: Bo\x00b <bob@corp.example>",
            b"Content-Type: text/plain; charset=utf-8",
            body=b"hel\x00lo\x00 world\n",
        )
    )
    assert p.subject == "nulhere"
    assert p.text == "hello world\n"
    assert_db_safe(p)


def test_clean_text() -> None:
    assert clean_text("a\x00b\r\nc") == "ab\r\nc"
    assert clean_text("caf\udce9") == "caf\ufffd"  # a surrogate-escaped byte


def test_clean_text_replaces_any_lone_surrogate() -> None:
    assert clean_text("a\ud800b").encode("utf-8")


def test_utf7_body_with_lone_surrogate_is_not_fatal() -> None:
    p = parse(eml("Subject: s", "Content-Type: text/plain; charset=utf-7", body=b"hi +2AA- you\n"))
    assert p.fatal is None
    assert p.text.startswith("hi")
    assert p.from_addr == "bob@corp.example"


def test_content_id_and_media_type_are_db_safe() -> None:
    body = multipart(
        b"Content-Type: text/plain\n\nhello\n",
        b"Content-Type: image/p\x00ng\nContent-ID: <ab\x00cd@x>\n"
        b"Content-Disposition: inline\n\nDATA\n",
    )
    p = parse(eml("Subject: s", "MIME-Version: 1.0", mp_header("mixed"), body=body))
    (att,) = p.attachments
    assert "\x00" not in att.media_type
    assert "\x00" not in (att.content_id or "")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Message-ID: <abc@corp.example>", "<abc@corp.example>"),
        ("Message-ID:   <abc@corp.example>  (comment)", "<abc@corp.example>"),
        ("Message-ID: abc@corp.example", "<abc@corp.example>"),
        ("Message-ID: <a@x> <b@y>", "<a@x>"),
        ("Message-ID: with space@corp.example", None),
        ("Message-ID:", None),
        ("X-Other: 1", None),
    ],
)
def test_message_id_normalisation(header: str, expected: str | None) -> None:
    assert parse(eml(header)).message_id == expected


def test_long_message_id_is_bounded() -> None:
    p = parse(eml("Message-ID: <" + "a" * 2000 + "@x>"))
    assert p.message_id is not None and len(p.message_id) <= 998


def test_in_reply_to_and_references() -> None:
    p = parse(
        eml(
            "In-Reply-To: <p1@x> (Bob's message of Monday)",
            "References: <r1@x>\n <r2@x>  <r1@x>\tgarbage <r3@x>",
        )
    )
    assert p.in_reply_to == ("<p1@x>",)
    assert p.references == ("<r1@x>", "<r2@x>", "<r3@x>")  # in order, without repeats
    assert parse(eml("In-Reply-To: not an id")).in_reply_to == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 2 Jan 2023 10:00:00 +0200", datetime(2023, 1, 2, 8, 0, tzinfo=UTC)),
        ("Mon, 2 Jan 2023 10:00:00 +0200 (CEST)", datetime(2023, 1, 2, 8, 0, tzinfo=UTC)),
        ("Tue, 3 Jan 2023 10:00:00", datetime(2023, 1, 3, 10, 0, tzinfo=UTC)),
        ("3 Jan 2023 10:00 -0500", datetime(2023, 1, 3, 15, 0, tzinfo=UTC)),
    ],
)
def test_dates(value: str, expected: datetime) -> None:
    p = parse(eml(f"Date: {value}"))
    assert p.date == expected
    assert p.date is not None and p.date.tzinfo is not None
    assert not any("Date" in problem for problem in p.problems)


@pytest.mark.parametrize(
    "value",
    ["garbage", "Mon, 32 Foo 2023 99:99:99 +0000", "2023-01-02", "Mon, 2 Jan 2023 25:61:00 +0000"],
)
def test_garbage_dates(value: str) -> None:
    p = parse(eml(f"Date: {value}"))
    assert p.fatal is None
    assert p.date is None
    assert any(problem.startswith("unreadable Date") for problem in p.problems)


def test_overflowing_date_is_reported() -> None:
    p = parse(eml("Date: Fri, 31 Dec 9999 23:00:00 -1400"))
    assert p.date is None
    assert any("Date" in problem for problem in p.problems)


def test_no_date_is_not_a_problem() -> None:
    p = parse(eml("Subject: x"))
    assert p.date is None
    assert p.problems == []


DSR = b"""From: Mail Delivery System <MAILER-DAEMON@mx.corp.example>
To: it-help@corp.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsr1@mx.corp.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system. Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.corp.example
Final-Recipient: rfc822;bob@elsewhere.example
Action: failed
Status: 5.1.1

--B
Content-Type: ORIGINAL_TYPE

From: IT Help <it-help@corp.example>
To: bob@elsewhere.example
Subject: [IT #1] Re: printer
Message-ID: <orig-out-1@corp.example>

ORIGINAL_BODY
--B--
"""


def test_delivery_status_report_with_headers_only() -> None:
    p = parse(DSR.replace(b"ORIGINAL_TYPE", b"text/rfc822-headers").replace(b"ORIGINAL_BODY", b""))
    assert p.is_delivery_report
    assert p.report_message_ids == ("<orig-out-1@corp.example>",)
    assert p.message_id == "<dsr1@mx.corp.example>"
    assert p.text.startswith("This is the mail system.")


def test_ordinary_multipart_is_not_a_delivery_report() -> None:
    body = multipart(b"Content-Type: text/plain\n\nMessage-ID: <x@y>\n")
    p = parse(eml("MIME-Version: 1.0", mp_header("mixed"), body=body))
    assert not p.is_delivery_report
    assert p.report_message_ids == ()


def test_delivery_status_report_with_full_original() -> None:
    p = parse(DSR.replace(b"ORIGINAL_TYPE", b"message/rfc822").replace(b"ORIGINAL_BODY", b"hi"))
    assert p.is_delivery_report
    assert p.report_message_ids == ("<orig-out-1@corp.example>",)


# --------------------------------------------------------------------------- identity

ORIGINAL = (
    b"From: Bob <bob@corp.example>\nTo: it@corp.example\nSubject: Printer\n"
    b"Date: Mon, 2 Jan 2023 10:00:00 +0000\nMessage-ID: <m1@corp.example>\n\n"
    b"The printer is broken.\nPlease help.\n"
)


def test_identity_ignores_line_endings_and_delivery_headers() -> None:
    base = content_identity(ORIGINAL, "<m1@corp.example>")
    crlf = ORIGINAL.replace(b"\n", b"\r\n")
    delivered = (
        b"Return-Path: <bob@corp.example>\nDelivered-To: it@corp.example\n"
        b"Received: from mx.corp.example by imap.corp.example with LMTP;\n"
        b"\tMon, 2 Jan 2023 10:00:01 +0000\nX-Original-To: it@corp.example\n"
    ) + ORIGINAL
    assert content_identity(crlf, "<m1@corp.example>") == base
    assert content_identity(delivered, "<m1@corp.example>") == base
    assert content_identity(delivered.replace(b"\n", b"\r\n"), "<m1@corp.example>") == base


def test_identity_separates_different_mail_with_the_same_message_id() -> None:
    other_body = ORIGINAL.replace(b"Please help.", b"Never mind, it works.")
    other_subject = ORIGINAL.replace(b"Subject: Printer", b"Subject: Scanner")
    ids = {content_identity(raw, "<m1@corp.example>") for raw in (ORIGINAL, other_body)}
    assert len(ids) == 2
    assert content_identity(other_subject, "<m1@corp.example>") not in ids


def test_identity_without_message_id() -> None:
    raw = ORIGINAL.replace(b"Message-ID: <m1@corp.example>\n", b"")
    identity = content_identity(raw, parse(raw).message_id)
    assert identity and len(identity) <= 128
    assert identity == content_identity(raw.replace(b"\n", b"\r\n"), None)
    assert identity != content_identity(raw + b"more\n", None)


def test_identity_of_different_headerless_messages_differs() -> None:
    one = content_identity(b"garbage written by a broken fetcher", None)
    two = content_identity(b"completely different garbage", None)
    assert one != two


# --------------------------------------------------------------------------- hypothesis

FAST = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
FRAGMENTS = [
    b"From: a@b.example\n",
    b"Subject: ",
    b"=?utf-8?B?",
    b"=?koi8-r?Q?=F0=D2?=",
    b"?=",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"MIME-Version: 1.0\n",
    b"Content-Type: multipart/mixed; boundary=X\n",
    b"Content-Type: text/plain; charset=utf-7\n",
    b"Content-Type: text/html; charset=x-bogus\n",
    b"Content-Type: message/rfc822\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b'Content-Disposition: attachment; filename="../x"\n',
    b"--X\n",
    b"--X--\n",
    b"\x00",
    b"\xff\xfe",
    b"\xe9t\xe9",
    b"<p>hi</p>",
    b"=E9=\n",
    b"QUJD===",
]
RAW_BYTES = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=20)), max_size=40).map(
        b"".join
    ),
)


@FAST
@given(RAW_BYTES)
def test_parse_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    p = parse(raw)
    assert isinstance(p, ParsedMessage)
    assert_db_safe(p)


CHARSETS = [
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1252",
    "iso-8859-2",
    "koi8-r",
    "windows-1251",
    "shift_jis",
    "iso-2022-jp",
    "gb2312",
    "big5",
    "utf-16",
    "utf-7",
    "x-unknown-charset",
    "utf8mb4",
    "_iso-2022-jp$ESC",
    "",
]
CTES = ["", "7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "bogus"]
LEAF_TYPES = [
    "text/plain",
    "text/html",
    "application/octet-stream",
    "application/pdf",
    "image/png",
    "message/delivery-status",
    "text/rfc822-headers",
]
MULTIPART_TYPES = ["mixed", "alternative", "related", "report; report-type=delivery-status"]
TEXT = st.text(max_size=60)


def _encode(text: str, charset: str) -> bytes:
    try:
        return text.encode(charset or "utf-8", "replace")
    except LookupError:
        return text.encode("utf-8")


@st.composite
def header_values(draw: st.DrawFn) -> bytes:
    text = draw(TEXT)
    charset = draw(st.sampled_from(CHARSETS))
    data = _encode(text, charset)
    how = draw(st.sampled_from(["raw", "b", "q", "broken"]))
    cs = (charset or "utf-8").encode()
    if how == "raw":
        value = data
    elif how == "b":
        value = b"=?" + cs + b"?B?" + base64.b64encode(data) + b"?="
    elif how == "q":
        value = b"=?" + cs + b"?Q?" + b"".join(b"=%02X" % c for c in data) + b"?="
    else:
        value = b"=?" + cs + b"?B?" + base64.b64encode(data)[:-2] + b"!?="
    return value.replace(b"\r", b" ").replace(b"\n", b" ")


@st.composite
def leaves(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    ctype = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(CTES))
    if draw(st.booleans()):
        payload = _encode(draw(st.text(max_size=200)), charset)
    else:
        payload = draw(st.binary(max_size=120))
    if cte == "base64":
        body = base64.encodebytes(payload)
        if draw(st.booleans()):  # broken base64
            body = body[: max(0, len(body) - 3)] + b"!*"
    elif cte == "quoted-printable":
        body = b"".join(b"=%02X" % c if c > 126 or c == 61 else bytes([c]) for c in payload)
    else:
        body = payload
    headers = [f"Content-Type: {ctype}".encode() + (f"; charset={charset}".encode())]
    if cte:
        headers.append(f"Content-Transfer-Encoding: {cte}".encode())
    disposition = draw(st.sampled_from(["", "inline", "attachment"]))
    if disposition:
        line = disposition.encode()
        if draw(st.booleans()):
            line += b'; filename="' + draw(header_values()).replace(b'"', b"") + b'"'
        headers.append(b"Content-Disposition: " + line)
    if draw(st.booleans()):
        headers.append(b"Content-ID: <" + draw(st.sampled_from([b"a@b", b"x y", b""])) + b">")
    return headers, body


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> tuple[list[bytes], bytes]:
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "rfc822"] if depth < 3 else ["leaf"]))
    if kind == "leaf":
        return draw(leaves())
    if kind == "rfc822":
        return [b"Content-Type: message/rfc822"], draw(messages(depth + 1))
    subtype = draw(st.sampled_from(MULTIPART_TYPES))
    boundary = f"b{depth}-{draw(st.integers(0, 999))}"
    children = draw(st.lists(trees(depth + 1), max_size=4))
    body = b"preamble\n"
    for headers, child in children:
        body += f"--{boundary}\n".encode() + b"\n".join(headers) + b"\n\n" + child + b"\n"
    if draw(st.booleans()):
        body += f"--{boundary}--\n".encode()
    return [f'Content-Type: multipart/{subtype}; boundary="{boundary}"'.encode()], body


@st.composite
def messages(draw: st.DrawFn, depth: int = 0) -> bytes:
    headers: list[bytes] = []
    for name in ("Subject", "To", "Cc", "Date", "In-Reply-To", "References", "Auto-Submitted"):
        if draw(st.booleans()):
            headers.append(name.encode() + b": " + draw(header_values()))
    name = draw(header_values())
    local = draw(st.sampled_from([b"bob", b"mailer-daemon", b"", b"\xc3\xa9l\xc3\xa8ve"]))
    headers.append(b"From: " + name + b" <" + local + b"@corp.example>")
    if draw(st.booleans()):
        headers.append(b"Message-ID: <" + draw(header_values()).replace(b">", b"") + b">")
    headers.append(b"MIME-Version: 1.0")
    part_headers, body = draw(trees(depth))
    raw = b"\n".join(headers + part_headers) + b"\n\n" + body
    return raw.replace(b"\n", b"\r\n") if draw(st.booleans()) else raw


@FAST
@given(messages())
def test_parse_never_raises_on_generated_mail(raw: bytes) -> None:
    p = parse(raw)
    assert isinstance(p, ParsedMessage)
    assert "\x00" not in p.text
    p.text.encode("utf-8")
    assert_db_safe(p)
    for att in p.attachments:
        assert isinstance(att.data, bytes)


FILENAME_CHARS = st.one_of(
    st.characters(codec="utf-8"),  # everything but surrogates
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),  # raw 8-bit, as email escapes it
    st.sampled_from(list("/\\:.\x00\x1b\x7f\x85 " + BIDI_CONTROLS)),
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.text(FILENAME_CHARS, max_size=400),
    st.sampled_from(["", "application/pdf", "image/png", "x/unknown", "message/rfc822"]),
    st.integers(1, 10_000),
)
def test_safe_filename_properties(name: str, media_type: str, index: int) -> None:
    result = safe_filename(name, media_type, index)
    assert result
    assert "/" not in result and "\\" not in result
    assert not any(unicodedata.category(c) == "Cc" for c in result), ascii(result)
    assert not set(result) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert len(result.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert result not in (".", "..")


def test_decode_bytes_never_raises_on_declared_garbage() -> None:
    problems: list[str] = []
    assert decode_bytes(b"abc", "no-such-charset", problems, "body") == "abc"
    assert decode_bytes("é".encode(), "ascii", problems, "body") == "é"
    assert len(problems) == 2


# --------------------------------------------------------------------------- corpus

corpus = pytest.mark.skipif(
    not CORPUS.is_dir(),
    reason=f"real-world corpus not found at {CORPUS} (set DESKQ_CORPUS_DIR; a clone lacks it)",
)


def _corpus(name: str) -> ParsedMessage:
    return parse((CORPUS / name).read_bytes())


@corpus
def test_corpus_every_message_parses() -> None:
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) >= 20
    for path in files:
        p = parse(path.read_bytes())
        assert p.fatal is None, path.name
        assert p.from_addr and "@" in p.from_addr, path.name
        assert p.subject, path.name
        assert_db_safe(p)


@corpus
def test_corpus_koi8r_attachment_names() -> None:
    p = _corpus("message_with_koi8r_filename_attachments.eml")
    names = [a.filename for a in p.attachments]
    pdfs = [n for n in names if n.endswith(".pdf")]
    assert "Ведомости.pdf" in pdfs
    assert len(pdfs) >= 2
    assert all(any("а" <= c.lower() <= "я" for c in n) for n in pdfs)
    assert p.subject == "Предложения от НИУ ВШЭ на 2016 год"


@corpus
def test_corpus_rfc822_attachment() -> None:
    p = _corpus("message_with_rfc822_attachment.eml")
    (att,) = [a for a in p.attachments if a.media_type == "message/rfc822"]
    assert att.filename.endswith(".eml")
    inner = parse(att.data)
    assert inner.fatal is None and inner.from_addr


@corpus
def test_corpus_single_byte_extended_subject() -> None:
    p = _corpus("message_with_single_byte_extended_subject_encoding.eml")
    assert p.subject == "Узнай как зарабатывать от 1000$ в неделю!"


@corpus
def test_corpus_broken_encodings_still_give_text() -> None:
    p = _corpus("message_with_invalid_encoding.eml")
    assert p.text.strip() and any("unknown charset" in problem for problem in p.problems)
    p = _corpus("email_issue_82.eml")
    assert p.text.strip() and "\ufffd" not in p.text


# ------------------------------------------------------------- addresses as stored


@given(
    name=st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x7f"),
        max_size=30,
    ).map(lambda s: " ".join(s.split())),
    local=st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True),
)
def test_a_stored_address_reads_back_as_the_same_pair(name: str, local: str) -> None:
    address = f"{local}@corp.example"
    text = display_address(name, address)
    assert getaddresses([text]) == [(name, address)]
    assert "=?" not in text or "=?" in name  # readable, never an RFC 2047 word
    pairs = [(name, address), ("Müller, José", "jose@corp.example")]
    assert getaddresses([display_addresses(pairs)]) == pairs


def test_names_and_addresses_beyond_ascii_are_stored_readable() -> None:
    assert display_address("José Müller", "jose@corp.example") == "José Müller <jose@corp.example>"
    assert display_address("张伟", "张伟@例子.中国") == "张伟 <张伟@例子.中国>"  # RFC 6532
    assert display_address("Doe, Jane", "j@x.example") == '"Doe, Jane" <j@x.example>'
    assert display_address("", "j@x.example") == "j@x.example"


def test_an_overlong_message_id_or_subject_is_cut_the_same_way_everywhere() -> None:
    long_id = "<" + "é" * 900 + "@x.example>"
    raw = (
        f"From: a@x.example\nMessage-ID: {long_id}\nIn-Reply-To: {long_id}\n"
        f"References: <a@x> {long_id}\nSubject: {'s' * 5000}\n\nbody\n"
    ).encode()
    p = parse(raw)
    assert p.message_id is not None and len(p.message_id) == MAX_MESSAGE_ID
    assert p.message_id.startswith("<éé") and p.message_id.endswith(">")
    assert p.in_reply_to == (p.message_id,) and p.references == ("<a@x>", p.message_id)
    assert p.subject == "s" * MAX_SUBJECT
    assert f"subject of 5,000 characters cut to {MAX_SUBJECT:,}" in p.problems
