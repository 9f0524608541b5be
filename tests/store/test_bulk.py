"""store.bulk writes exactly the rows SQLAlchemy's own INSERT writes, defaults included."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert
from sqlalchemy.exc import StatementError

from store.bulk import insert_rows
from store.db import Database
from store.models import (
    Event,
    Message,
    Person,
    Queue,
    RawSource,
    Status,
    Ticket,
    TicketFlag,
)

WHEN = datetime(2026, 3, 29, 0, 30, 5, 123456, tzinfo=UTC)
ELSEWHERE = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))


def _fresh(path: Path) -> Database:
    db = Database.open(f"sqlite:///{path}")
    with db.write() as s:
        conn = s.connection()
        conn.execute(
            insert(Queue.__table__),
            [{"id": 1, "key": "it", "name": "IT", "tag": "IT", "address": "it@corp.example"}],
        )
        conn.execute(
            insert(Person.__table__),
            [{"id": 1, "address": "a@b.example", "created_at": WHEN}],
        )
    return db


CASES: list[tuple[Any, list[dict[str, Any]]]] = [
    (
        Ticket,
        [
            {
                "id": 7,
                "queue_id": 1,
                "subject": "Printer ✓",
                "requester_id": 1,
                "status": Status.NEW,
                "created_at": WHEN,
                "updated_at": ELSEWHERE,
                "version": 1,
            },
            {
                "id": 8,
                "queue_id": 1,
                "subject": "",
                "requester_id": 1,
                "status": Status.RESOLVED,
                "created_at": ELSEWHERE,
                "updated_at": WHEN,
                "version": 3,
            },
        ],
    ),
    (
        Message,
        [
            {
                "id": 3,
                "ticket_id": 7,
                "direction": "inbound",
                "message_id": "<m@x>",
                "in_reply_to": None,
                "from_addr": "A <a@b.example>",
                "text_body": "caf\u00e9\n\x01",
                "has_html": False,
                "date": None,
                "created_at": WHEN,
            }
        ],
    ),
    (
        Event,
        [
            {
                "ticket_id": 7,
                "at": WHEN,
                "actor_id": None,
                "version": 1,
                "kind": "created",
                "data": {"queue": "it", "n": [1, 2], "x": None, "é": "ü"},
            },
            {
                "ticket_id": 7,
                "at": ELSEWHERE,
                "actor_id": 1,
                "version": 2,
                "kind": "note",
                "data": {},
            },
        ],
    ),
    (
        RawSource,
        [
            {
                "identity": "<a>|1",
                "sha256": "ab",
                "size": 3,
                "data": b"\x00\xffz",
                "uid": 5,
                "uidvalidity": None,
                "received_at": WHEN,
            },
        ],
    ),
    (TicketFlag, [{"ticket_id": 7, "flag": "automatic", "detail": "x"}]),
]


def _dump(path: Path, table: str, skip: set[str]) -> list[tuple[Any, ...]]:
    """Every row, each value with its SQLite storage class."""
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in skip]
        typed = ", ".join(f'typeof("{c}"), "{c}"' for c in columns)
        return sorted(conn.execute(f"SELECT {typed} FROM {table}").fetchall(), key=repr)


@pytest.mark.parametrize(("model", "rows"), CASES, ids=[c[0].__name__ for c in CASES])
def test_rows_are_those_sqlalchemy_writes(
    tmp_path: Path, model: Any, rows: list[dict[str, Any]]
) -> None:
    table: Table = model.__table__
    # Callable defaults ("now") differ by the time between the two writes.
    skip = {
        c.key
        for c in table.columns
        if c.default is not None and c.default.is_callable and c.key not in rows[0]
    }
    skip.discard("data")  # dict(): the same either way
    dumps = []
    for name, write in (
        ("ours", lambda conn, rs: insert_rows(conn, table, rs)),
        ("sqlalchemy", lambda conn, rs: conn.execute(insert(table), rs)),
    ):
        path = tmp_path / f"{name}.db"
        db = _fresh(path)
        with db.write() as s:
            if model in (Message, Event, TicketFlag):  # their ticket first
                s.connection().execute(insert(Ticket.__table__), CASES[0][1])
            write(s.connection(), [dict(r) for r in rows])
        db.close()
        dumps.append(_dump(path, table.name, skip))
    ours, theirs = dumps
    assert ours == theirs
    assert len(ours) == len(rows)


def test_rows_read_back_through_the_models(tmp_path: Path) -> None:
    db = _fresh(tmp_path / "x.db")
    with db.write() as s:
        insert_rows(s.connection(), Ticket.__table__, CASES[0][1])  # type: ignore[arg-type]
        insert_rows(s.connection(), Event.__table__, CASES[2][1])  # type: ignore[arg-type]
    with db.session() as s:
        ticket = s.get(Ticket, 7)
        assert ticket is not None
        assert ticket.status is Status.NEW and ticket.updated_at == ELSEWHERE
        assert ticket.priority.value == "normal"  # the column default
        events = s.query(Event).order_by(Event.id).all()
        assert events[0].data == {"queue": "it", "n": [1, 2], "x": None, "é": "ü"}
        assert events[1].at == ELSEWHERE and events[1].data == {}


def test_uneven_rows_are_refused_as_sqlalchemy_refuses_them(tmp_path: Path) -> None:
    """A row missing a key is never written with a silent default or a shifted column."""
    db = _fresh(tmp_path / "x.db")
    rows = [dict(r) for r in CASES[0][1]]
    del rows[1]["subject"]
    with pytest.raises(StatementError, match="subject"), db.write() as s:
        insert_rows(s.connection(), Ticket.__table__, rows)  # type: ignore[arg-type]
    rows[1]["other"] = 1  # as many keys as the first row, but not the same ones
    with pytest.raises(KeyError), db.write() as s:
        insert_rows(s.connection(), Ticket.__table__, rows)  # type: ignore[arg-type]
    with db.session() as s:
        assert s.get(Ticket, 7) is None


def test_many_rows_are_split_into_statements_within_sqlites_parameter_limit(
    tmp_path: Path,
) -> None:
    """Rows beyond one statement's parameters go in further statements, none lost."""
    db = _fresh(tmp_path / "x.db")
    base = CASES[1][1][0]
    rows = [{**base, "id": 100 + n, "subject": f"row {n} zebra{n}"} for n in range(1234)]
    with db.write() as s:
        conn = s.connection()
        conn.execute(insert(Ticket.__table__), CASES[0][1])
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # old SQLite's limit
        statements: list[int] = []
        dbapi.set_trace_callback(lambda sql: statements.append(sql.count("),")))
        insert_rows(conn, Message.__table__, rows)  # type: ignore[arg-type]
        dbapi.set_trace_callback(None)
    assert len(statements) >= 1234 * len(base) // 999  # split by the limit
    raw = sqlite3.connect(tmp_path / "x.db")
    assert raw.execute("SELECT count(*), min(id), max(id) FROM messages").fetchone() == (
        1234,
        100,
        1333,
    )
    # Each row fired the search trigger once.
    found = raw.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'zebra1233'")
    assert found.fetchall() == [(1333,)]
    assert raw.execute("SELECT count(*) FROM messages_fts").fetchone() == (1234,)


def test_statements_come_in_two_shapes_whatever_the_row_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full multi-row statements, then single rows: the driver caches one statement per
    text with a copy of its last values, so each extra shape would pin emails in memory."""
    monkeypatch.setattr("store.bulk.MAX_ROWS", 10)
    db = _fresh(tmp_path / "x.db")
    base = CASES[1][1][0]
    shapes: set[int] = set()
    next_id = 100
    with db.write() as s:
        conn = s.connection()
        conn.execute(insert(Ticket.__table__), CASES[0][1])
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.set_trace_callback(
            lambda sql: shapes.add(sql.count("), (") + 1) if "INSERT" in sql else None
        )
        for count in range(1, 34):
            rows = [{**base, "id": next_id + n} for n in range(count)]
            next_id += count
            insert_rows(conn, Message.__table__, rows)  # type: ignore[arg-type]
        dbapi.set_trace_callback(None)
    assert shapes == {1, 10}
    raw = sqlite3.connect(tmp_path / "x.db")
    assert raw.execute("SELECT count(*) FROM messages").fetchone() == (sum(range(1, 34)),)
