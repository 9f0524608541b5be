"""How raw emails and attachments are compressed in the database.

New rows are Zstandard (``compression = 'zstd'``); rows written before it keep
``'zlib'`` and read back the same way, so no migration rewrites them. On a 10,000-email
import, Zstandard at level 1 compressed the raw sources in 0.05 s of CPU against
0.34 s for zlib at level 1, to a smaller result (see README, Benchmarks); it also
passes incompressible attachments (photos, archives) through quickly, where zlib
spent as long on them as on text.

Light on purpose: parse workers import it (no database code here).
"""

from __future__ import annotations

import threading
import zlib

import zstandard

CODEC = "zstd"
# Raw sources: written once per email on the import path, so the fastest level.
RAW_LEVEL = 1
# Attachments: stored once per content (deduplicated), often kept for years.
BLOB_LEVEL = 3

# What inflate raises for data that is not what its row says (damaged, or unknown).
DAMAGED = (zlib.error, zstandard.ZstdError, ValueError)

_local = threading.local()  # compression contexts are not thread-safe; reusing one is 3x faster


def compress(data: bytes, level: int = RAW_LEVEL) -> bytes:
    """``data`` compressed as :data:`CODEC` (store ``CODEC`` in the row's compression)."""
    compressors: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "c", None)
    if compressors is None:
        compressors = _local.c = {}
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level)
    return compressor.compress(data)


def inflate(compression: str, data: bytes) -> bytes:
    """The bytes a row stored as ``compression`` (``zstd``, ``zlib`` or none) holds."""
    if compression == "zstd":
        decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
        if decompressor is None:
            decompressor = _local.d = zstandard.ZstdDecompressor()
        return decompressor.decompress(data)
    if compression == "zlib":
        return zlib.decompress(data)
    if compression in ("", "none"):
        return data
    raise ValueError(f"unknown compression {compression!r}")


# Message text: the first TEXT_INLINE characters of a body are stored as text, which
# is what search indexes and what lists and previews read; the rest of a longer body
# is stored beside it compressed (messages.text_more, always CODEC). On the benchmark's
# 10,000 emails the bodies were 61 MB of text, 53 MB of it in the 5 % over this size:
# writing and indexing those bytes cost a quarter of storing the import.
TEXT_INLINE = 16_384


def split_text(text: str) -> tuple[str, bytes | None]:
    """``(inline, more)``: ``text`` as stored; ``more`` is None for a short text."""
    if len(text) <= TEXT_INLINE:
        return text, None
    rest = text[TEXT_INLINE:].encode("utf-8", "surrogatepass")
    return text[:TEXT_INLINE], compress(rest)


def join_text(inline: str, more: bytes | None) -> str:
    """The whole text :func:`split_text` stored as ``inline`` and ``more``."""
    if not more:
        return inline
    return inline + inflate(CODEC, more).decode("utf-8", "surrogatepass")
