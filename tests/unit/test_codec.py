"""store.codec: new rows are Zstandard; rows written as zlib before still read back."""

from __future__ import annotations

import os
import threading
import zlib

import pytest
import zstandard

from mail.parse import parse
from mail.prepare import Incoming, prepare
from store import codec
from store.models import Blob, RawSource


def test_new_data_is_zstd_and_reads_back_exactly() -> None:
    data = b"Subject: printer\r\n\r\n" + b"the printer on floor 3 jams\r\n" * 500
    packed = codec.compress(data)
    assert codec.CODEC == "zstd"
    assert packed[:4] == zstandard.MAGIC_NUMBER.to_bytes(4, "little")
    assert len(packed) < len(data) // 10
    assert codec.inflate("zstd", packed) == data
    assert codec.inflate("zstd", codec.compress(data, codec.BLOB_LEVEL)) == data


def test_rows_written_before_read_back() -> None:
    data = os.urandom(3000) + b"text" * 100
    assert codec.inflate("zlib", zlib.compress(data)) == data
    assert codec.inflate("none", data) == data
    assert RawSource(compression="zlib", data=zlib.compress(data)).content() == data
    assert Blob(compression="zstd", data=codec.compress(data)).content() == data


def test_unknown_compression_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown compression 'lzma'"):
        codec.inflate("lzma", b"")


def test_incompressible_data_passes_through() -> None:
    data = os.urandom(1 << 20)  # a photo, an archive
    packed = codec.compress(data, codec.BLOB_LEVEL)
    assert len(packed) < len(data) + 1024
    assert codec.inflate("zstd", packed) == data


def test_threads_each_use_their_own_context() -> None:
    results: dict[int, bool] = {}

    def work(n: int) -> None:
        ok = True
        for i in range(200):
            data = f"thread {n} email {i} ".encode() * (50 + i)
            ok &= codec.inflate("zstd", codec.compress(data)) == data
        results[n] = ok

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: True for n in range(6)}


def test_prepared_emails_are_compressed_as_the_codec_says() -> None:
    raw = b"From: a@b.example\r\nSubject: hi\r\n\r\n" + b"body line\r\n" * 200
    prepared = prepare(Incoming(raw=raw, mailbox="m"), 1 << 20)
    assert codec.inflate(codec.CODEC, prepared.compressed) == raw


@pytest.mark.parametrize("compression", ["zstd", "zlib", "lzma"])
def test_damaged_data_raises_what_callers_catch(compression: str) -> None:
    with pytest.raises(codec.DAMAGED):
        codec.inflate(compression, b"not what the row says")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short",
        "x" * codec.TEXT_INLINE,  # exactly the inline part: nothing more
        "é" * (codec.TEXT_INLINE + 1),
        "a\r\n" * codec.TEXT_INLINE,  # a CRLF cut in two at the boundary
        "🙂 Zürich " * codec.TEXT_INLINE,  # characters beyond the BMP, not bytes
        "lone \udcff surrogate " * 2000,
    ],
)
def test_message_text_splits_at_the_inline_length_and_joins_back_exactly(text: str) -> None:
    inline, more = codec.split_text(text)
    same = inline == text[: codec.TEXT_INLINE] and codec.join_text(inline, more) == text
    assert same  # (a failed comparison of such strings is too long to show)
    assert (more is None) == (len(text) <= codec.TEXT_INLINE)


def test_a_prepared_long_email_carries_its_rest_compressed() -> None:
    """The worker splits the body, so the writer never handles the long part as text."""
    body = "A log line that goes on and on.\r\n" * 2000
    raw = ("Subject: log\r\nMessage-ID: <log@x>\r\n\r\n" + body).encode()
    prepared = prepare(Incoming(raw=raw, mailbox="m"), 1 << 20)
    assert len(prepared.parsed.text) == codec.TEXT_INLINE and prepared.text_more is not None
    whole = codec.join_text(prepared.parsed.text, prepared.text_more)
    same = whole == parse(raw).text and whole.startswith(body[:100]) and len(whole) > len(body) - 10
    assert same  # (a failed comparison of such strings is too long to show)
