"""deskq's email parser gives what the standard library's parser gives, faster.

``mail.mimeparse`` answers the multipart boundary pattern of ``email.feedparser`` by
hand, and ``content_identity`` strips trailing blanks without a regular expression.
Both must agree exactly with what they replace: identities are stored, and a
changed one would let a re-delivered email through as new.
"""

from __future__ import annotations

import hashlib
import re
from email import policy
from email.message import Message
from email.parser import BytesParser

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mail.mimeparse
from mail.mimeparse import (
    _BOUNDARY_HEAD,
    _BOUNDARY_TAIL,
    BoundaryMatcher,
    _BoundaryAwareRe,
    message_from_bytes,
)
from mail.parse import _ORIGIN_HEADER, _without_trailing_blanks, content_identity
from tests.bench.ingest import corpus
from tests.support import CORPUS

GROUPS = (0, "sep", "end", "ws", "linesep")


def _pattern(sep: str) -> str:
    return _BOUNDARY_HEAD + re.escape(sep) + _BOUNDARY_TAIL


def _same_match(sep: str, line: str) -> None:
    expected = re.compile(_pattern(sep)).match(line)
    got = BoundaryMatcher(sep, _pattern(sep)).match(line)
    assert (got is None) == (expected is None), (sep, line)
    if expected is not None and got is not None:
        assert [got.group(g) for g in GROUPS] == [expected.group(g) for g in GROUPS]
        assert got.group() == expected.group()
        assert got.group("end", "linesep") == expected.group("end", "linesep")


SEPARATORS = st.text(alphabet="-=_.+?()[]*$^\\|ab0 \t", min_size=1, max_size=8).map(
    lambda s: "--" + s
)
TAILS = st.text(alphabet="- \t\r\nxab=", max_size=8)


@settings(max_examples=2000, deadline=None)
@given(sep=SEPARATORS, tail=TAILS, prefix=st.sampled_from(["", "x", " ", "-"]))
@example(sep="--b", tail="--  \r\n", prefix="")
@example(sep="--b", tail="\r\n\n", prefix="")
@example(sep="--b", tail="\r\r\n", prefix="")
@example(sep="--b", tail="---\n", prefix="")
@example(sep="--b", tail=" \t\n\n", prefix="")
def test_boundary_matcher_agrees_with_the_expression(sep: str, tail: str, prefix: str) -> None:
    _same_match(sep, prefix + sep + tail)


def test_only_the_boundary_pattern_is_answered_by_hand() -> None:
    proxy = _BoundaryAwareRe()
    assert isinstance(proxy.compile(_pattern("--abc")), BoundaryMatcher)
    assert isinstance(proxy.compile(_pattern("--a.b")), BoundaryMatcher)
    # Anything else, or the same text with flags, is a real expression.
    assert isinstance(proxy.compile(r"\d+"), re.Pattern)
    assert isinstance(proxy.compile(_pattern("--abc"), re.I), re.Pattern)
    assert proxy.escape("a.b") == re.escape("a.b")


def test_the_private_parser_is_in_use_and_the_standard_one_untouched() -> None:
    import email.feedparser

    assert mail.mimeparse._feedparser is not email.feedparser
    assert email.feedparser.re is re


def _shape(msg: Message) -> list[object]:
    """Everything the parser decides: structure, headers, payloads, defects."""
    out: list[object] = []
    for part in msg.walk():
        payload = part.get_payload()
        out.append(
            (
                part.get_content_type(),
                part.get_default_type(),
                list(part.raw_items()),
                [type(d).__name__ for d in part.defects],
                payload if isinstance(payload, str) else None,
                part.preamble,
                part.epilogue,
            )
        )
    return out


def _same_parse(raw: bytes) -> None:
    standard = BytesParser(policy=policy.compat32)
    assert _shape(message_from_bytes(raw)) == _shape(standard.parsebytes(raw))
    assert _shape(message_from_bytes(raw, True)) == _shape(standard.parsebytes(raw, True))


def test_parser_agrees_with_the_standard_one_on_generated_mail() -> None:
    for raw in corpus(300, seed=5):
        _same_parse(raw)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS} (../shared/corpus)")
def test_parser_agrees_with_the_standard_one_on_the_corpus() -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    assert files
    for path in files:
        _same_parse(path.read_bytes())


LINE = st.text(alphabet="ab -\t\r\n", max_size=12)


@st.composite
def multipart(draw: st.DrawFn) -> bytes:
    boundary = draw(st.text(alphabet="ab=_.+-?()", min_size=1, max_size=6))
    eol = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    opener = draw(st.sampled_from(["", " ", "--", " \t", "x"]))
    closer = draw(st.sampled_from(["", "--", "-- ", "--x"]))
    lines = [
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        draw(LINE),
        f"--{boundary}{opener}",
        "Content-Type: text/plain",
        "",
        draw(LINE),
        f"--{boundary}{closer}",
        draw(LINE),
    ]
    return eol.join(lines).encode()


@settings(max_examples=500, deadline=None)
@given(raw=multipart())
def test_parser_agrees_on_generated_multiparts(raw: bytes) -> None:
    _same_parse(raw)


def _old_without_trailing_blanks(body: bytes) -> bytes:
    return re.sub(rb"[ \t\r]+\n", b"\n", body)


@settings(max_examples=2000, deadline=None)
@given(body=st.binary().map(bytes.rstrip) | st.text(alphabet="a \t\r\n").map(str.encode))
@example(body=b"a \r\r\nb")
@example(body=b"  \n\t\n")
def test_trailing_blanks_are_stripped_as_before(body: bytes) -> None:
    body = body.rstrip()
    assert _without_trailing_blanks(body) == _old_without_trailing_blanks(body)


def test_identities_are_unchanged() -> None:
    """Identities stored by earlier versions must still be recognised."""
    raw = (
        b"From: a@b.example\r\nMessage-ID: <x@y>\r\nSubject: Hi \r\n\r\n"
        b"line one  \r\nline two\t\r\n\r\n"
    )
    # Computed by the regular-expression version this replaced.
    assert content_identity(raw, "<x@y>") == (
        "<x@y>|ee56e055d57c481c141e644f3130e1624b015fe23a97be670a46c3cb03c03ce8"
    )


def _old_identity(raw: bytes, message_id: str | None) -> str:
    """content_identity as it was: the whole message turned into LF lines first."""
    data = raw.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    if not sep:
        head, body = data, b""
    origin = [
        m.group(1).lower() + b":" + b" ".join(m.group(2).split())
        for m in _ORIGIN_HEADER.finditer(head)
    ]
    digest = hashlib.sha256()
    if not origin and not message_id:
        origin = [b" ".join(head.split())]
    elif not message_id and not any(o.startswith(b"date:") for o in origin):
        received = re.findall(rb"^received[ \t]*:(.*(?:\n[ \t].*)*)", head, re.I | re.M)
        if received:  # (since a device's alerts without Message-ID or Date were merged)
            origin.append(b"received:" + b" ".join(received[-1].split()))
    for item in sorted(origin):
        digest.update(item + b"\n")
    digest.update(b"\n")
    digest.update(_old_without_trailing_blanks(body.rstrip()))
    return f"{(message_id or '<>')[:60]}|{digest.hexdigest()}"


_PIECES = st.sampled_from(
    [
        *(b"\r\n", b"\n", b"\r", b" ", b"\t", b"\r\r\n", b"\x0c", b"body"),
        *(b"From: a@b", b"Subject: x", b"Received: r", b"Date: d"),
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    raw=st.lists(_PIECES | st.binary(max_size=8), max_size=40).map(b"".join),
    message_id=st.sampled_from(["<x@y>", None]),
)
@example(raw=b"X\r\r\n\nbody \r\n", message_id=None)
@example(raw=b"H\n\r\n\r\nB\r\r\r\n", message_id="<x@y>")
def test_identities_match_the_whole_message_normalised_first(
    raw: bytes, message_id: str | None
) -> None:
    assert content_identity(raw, message_id) == _old_identity(raw, message_id)


def test_identities_of_the_benchmark_corpus_are_unchanged() -> None:
    for raw in corpus(300, seed=1):  # 5 % with 40-200 KB of prose on one line
        crlf = raw if b"\r\n" in raw else raw.replace(b"\n", b"\r\n")
        for copy in (crlf, crlf.replace(b"\r\n", b"\n")):
            assert content_identity(copy, "<m@x>") == _old_identity(copy, "<m@x>")
