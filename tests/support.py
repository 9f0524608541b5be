"""Small shared facts for the tests."""

from __future__ import annotations

import os
from pathlib import Path

# The shared corpus of real-world broken mail sits beside the checkout (../shared);
# DESKQ_CORPUS_DIR points elsewhere. Tests that need it skip (or, in CI, fail) without.
CORPUS = (
    Path(os.environ.get("DESKQ_CORPUS_DIR", Path(__file__).resolve().parents[2] / "shared/corpus"))
    / "django-mailbox"
)


def empty_database_with_4k_pages(path: Path) -> str:
    """The URL of an empty SQLite file with 4 KB pages: a database made before deskq
    chose larger ones (SQLite fixes the page size once the file has a table)."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("DROP TABLE t")
    return f"sqlite:///{path}"
