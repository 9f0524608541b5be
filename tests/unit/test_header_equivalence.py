"""deskq's own header decoding gives the text ``policy.default`` gives, for valid headers.

Parsing with ``policy.compat32`` and decoding only the headers deskq uses is what makes
ingestion fast; this keeps it honest against the standard library's full decoder.
"""

from __future__ import annotations

from email import policy
from email.header import Header

from hypothesis import given, settings
from hypothesis import strategies as st

from mail.parse import decode_header_value

TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
    min_size=1,
    max_size=30,
).filter(lambda t: t.strip() != "")
PLAIN = st.from_regex(r"[A-Za-z0-9!.,:;()'-]{1,12}", fullmatch=True)


@st.composite
def encoded_word(draw: st.DrawFn) -> str:
    text = draw(TEXT)
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1", "koi8-r", "shift_jis"]))
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    return Header(text, charset).encode(maxlinelen=10_000)


def _reference(value: str) -> str:
    return " ".join(str(policy.default.header_factory("Subject", value)).split())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(PLAIN, encoded_word()), min_size=1, max_size=6))
def test_unstructured_headers_decode_like_policy_default(words: list[str]) -> None:
    value = " ".join(words)
    assert decode_header_value(value) == _reference(value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_header_text_decodes_without_raising(value: str) -> None:
    decoded = decode_header_value(value)
    assert "\n" not in decoded and "\r" not in decoded and "\x00" not in decoded


def _reference_addresses(value: str) -> tuple[tuple[str, str], ...]:
    from email.utils import getaddresses

    out = []
    for display, addr in getaddresses([value]):
        addr = " ".join(addr.split()).strip("<>").lower()
        if "@" in addr:
            out.append((decode_header_value(display), addr[:320]))
    return tuple(dict.fromkeys(out))


NAME = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "Zs"), include_characters=".'-_"),
    max_size=20,
)
LOCAL = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,15}", fullmatch=True)
DOMAIN = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z]{2,6}){1,2}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(NAME, LOCAL, DOMAIN, st.sampled_from(["{n} <{a}>", "<{a}>", "{a}", " {n}  <{a}> "]))
def test_address_fast_path_agrees_with_getaddresses(
    name: str, local: str, domain: str, shape: str
) -> None:
    from mail.parse import _addresses

    value = shape.format(n=name, a=f"{local}@{domain}")
    assert _addresses({"to": [value]}, "to") == _reference_addresses(value)
