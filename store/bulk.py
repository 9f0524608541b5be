"""Multi-row INSERTs for ingestion, without SQLAlchemy's per-row machinery on SQLite.

For every row of an executemany, SQLAlchemy builds a parameter dictionary, looks up
each column's processor and runs it: on SQLite that costs more than SQLite spends
storing the row. :func:`insert_rows` does the same conversion with each column's own
bind processor (``TypeEngine.dialect_impl(dialect).bind_processor``, so the values are
exactly those SQLAlchemy would send, defaults included) and hands the driver
multi-row INSERT statements of up to 100 rows. Other backends take SQLAlchemy's
regular path, which already sends a batch per statement there. Tests compare rows
written both ways.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect

from store.models import UTCDateTime

Processor = Callable[[Any], Any] | None


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``conn.execute(insert(table), rows)``; every row must have the same keys."""
    if not rows:
        return
    keys = tuple(rows[0])
    if conn.dialect.name != "sqlite" or any(len(row) != len(keys) for row in rows):
        conn.execute(insert(table), list(rows))
        return
    sql, marks, processors, defaults = _plan(table, keys, conn.dialect)
    # Column defaults are evaluated once per statement (SQLAlchemy: once per row); the
    # only callable ones are "now", the same instant for a batch.
    extra = tuple(default() for default in defaults)
    values = itemgetter(*keys) if len(keys) > 1 else lambda row: (row[keys[0]],)
    convert = [(i, p) for i, p in enumerate(processors) if p is not None]
    params: list[tuple[Any, ...]] = []
    for row in rows:
        cells = values(row)
        if convert:
            cells = list(cells)
            for i, p in convert:
                cells[i] = p(cells[i])
        params.append((*cells, *extra))
    # Multi-row statements: for a statement that fires triggers (messages: search)
    # SQLite journals every page it changes, so as to undo that statement alone; an
    # executemany would journal the same pages once per row (a tenth of the writing).
    # Always the same number of rows, the rest one by one: the driver caches each
    # statement text with a copy of its last values, so every other row count would
    # keep a batch of emails in memory for as long as the connection lives.
    per = max(1, min(MAX_ROWS, _variable_limit(conn) // len(params[0])))
    whole = len(params) - len(params) % per if per > 1 else 0
    if whole:
        many = sql.format(", ".join([marks] * per))
        for start in range(0, whole, per):
            conn.exec_driver_sql(many, _flat(params[start : start + per]))
    if whole < len(params):
        conn.exec_driver_sql(sql.format(marks), params[whole:])


@lru_cache(maxsize=64)
def _plan(
    table: Table, keys: tuple[str, ...], dialect: Dialect
) -> tuple[str, str, tuple[Processor, ...], tuple[Callable[[], Any], ...]]:
    """The statement, the processors of ``keys`` and the defaults of missing columns."""
    columns = [table.c[k] for k in keys]
    defaults: list[Callable[[], Any]] = []
    for column in table.columns:
        if column.key in keys or column.default is None:
            continue
        default: Any = column.default
        if default.is_sequence or default.is_clause_element:
            raise ValueError(f"{table.name}.{column.key}: default not computable here")
        value = default.arg
        processor = _processor(column.type, dialect)
        defaults.append(_default(value, processor, default.is_callable))
        columns.append(column)
    processors = tuple(_processor(c.type, dialect) for c in columns)
    preparer = dialect.identifier_preparer
    names = ", ".join(preparer.format_column(c) for c in columns)
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    sql = f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES {{}}"
    return sql, marks, processors[: len(keys)], tuple(defaults)


# Rows per multi-row INSERT (within SQLite's limit on parameters per statement).
# 500 saves another 3 % of writing, but each cached statement of that size holds
# its compiled program and a copy of its last values: 20 MB more at peak.
MAX_ROWS = 100


def _flat(rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(chain.from_iterable(rows))


def _variable_limit(conn: Connection) -> int:
    dbapi = conn.connection.dbapi_connection
    return int(dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))  # type: ignore[union-attr]


def _processor(kind: Any, dialect: Dialect) -> Processor:
    if isinstance(kind, UTCDateTime) and dialect.name == "sqlite":
        impl = getattr(kind.dialect_impl(dialect), "impl_instance", None)
        if getattr(impl, "_storage_format", None) == _SQLITE_DATETIME:
            return _utc_text
    processor: Processor = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor


# SQLAlchemy's text form of a SQLite DATETIME, which isoformat() gives ten times faster.
_SQLITE_DATETIME = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


def _utc_text(value: datetime | None) -> str | None:
    """UTCDateTime's bind processing followed by SQLite DATETIME's, in one step."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: deskq stores aware UTC times only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _default(value: Any, processor: Processor, is_callable: bool) -> Callable[[], Any]:
    def compute() -> Any:
        # Callable defaults are wrapped by SQLAlchemy to take an execution context;
        # deskq's (utcnow, dict) ignore it.
        result = value(None) if is_callable else value
        return result if processor is None else processor(result)

    return compute
