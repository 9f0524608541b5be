"""store.codec: new rows are Zstandard; rows written as zlib before still read back."""

from __future__ import annotations

import os
import threading
import zlib

import pytest
import zstandard

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
