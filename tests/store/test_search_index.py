"""The SQLite search index stays consistent when a long message is edited (migration 0009)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command

from store import migrate
from store.db import Database

LONG = "alpha " * 20_000 + "omega"  # past the 64k characters the index holds


def _setup(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO queues (id, key, name, tag, address, signature, created_at) "
        "VALUES (1, 'it', 'IT', 'IT', 'it@x', '', '2026-01-01 00:00:00')"
    )
    conn.execute(
        "INSERT INTO people (id, address, display_name, is_provider, created_at) "
        "VALUES (1, 'a@x', '', 0, '2026-01-01 00:00:00')"
    )
    conn.execute(
        "INSERT INTO tickets (id, queue_id, subject, requester_id, status, priority, "
        "created_at, updated_at, version) VALUES (1, 1, 's', 1, 'new', 'normal', "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)"
    )
    conn.execute(
        "INSERT INTO messages (id, ticket_id, direction, subject, text_body, from_addr, "
        "to_addrs, cc_addrs, threaded_by, created_at) VALUES (1, 1, 'inbound', 'Printer', ?, "
        "'', '', '', '', '2026-01-01 00:00:00')",
        (LONG,),
    )
    conn.commit()
    return conn


def _edit_and_check(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE messages SET subject = 'Scanner', text_body = 'beta' WHERE id = 1")
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    found = conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'beta'")
    assert found.fetchall() == [(1,)]
    gone = conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'alpha'")
    assert gone.fetchall() == []


def test_editing_a_long_body_keeps_the_index_consistent(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database.open(f"sqlite:///{path}").close()
    _edit_and_check(_setup(path))


def test_the_old_trigger_corrupted_it(tmp_path: Path) -> None:
    """What 0009 fixes: the check above fails with the trigger of 0001."""
    path = tmp_path / "x.db"
    db = Database.open(f"sqlite:///{path}")
    with db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0008")
    db.close()
    conn = _setup(path)
    try:
        _edit_and_check(conn)
    except (sqlite3.DatabaseError, AssertionError):
        pass
    else:
        raise AssertionError("the 0001 trigger kept the index consistent after all")
    conn.close()
    db = Database.open(f"sqlite:///{path}")  # migrates to 0009 again
    db.close()
