"""A mailbox folder's sync state read without the database layer (stdlib sqlite3).

``deskq poll`` starts a mailbox's first pass (mail.imapwire.prefetch) while it still
imports SQLAlchemy; it needs to know how far ingestion got. This reads it from a
SQLite database file, read-only, and answers None for anything else (PostgreSQL, a
URI or in-memory database, no database yet, any error): the pass then starts as
usual. What it answers is only a guess: the pass reads the state again, through the
database layer, and uses the early start only if the two agree.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote, unquote

# store.models.MailboxState (tests check these names against the model).
TABLE, COLUMNS = "mailbox_state", ("uidvalidity", "last_uid", "mailbox", "folder")


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (``~`` expanded, as store.db does)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    path = unquote(url[len(prefix) :])
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path).expanduser()


def sync_state(url: str, mailbox: str, folder: str) -> tuple[int | None, int] | None:
    """``(uidvalidity, last_uid)`` recorded for ``mailbox``/``folder``; ``(None, 0)``
    when the database has none recorded yet; None when it cannot tell."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return None
    try:
        validity, last, name, place = COLUMNS
        row = conn.execute(
            f"SELECT {validity}, {last} FROM {TABLE} WHERE {name} = ? AND {place} = ?",
            (mailbox, folder),
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if row is None:
        return None, 0
    return int(row[0]), int(row[1] or 0)
