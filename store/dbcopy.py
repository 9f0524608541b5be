"""Copying a whole deskq database to another one (SQLite to PostgreSQL), verifiably.

The target is migrated to the same schema head first, then every table of the models
is streamed across in chunks, parents first, keeping primary keys, in ONE target
transaction: a failed copy leaves the target as it was. What is derived or
backend-specific is not copied but rebuilt by the target itself: SQLite's
``messages_fts`` (triggers fill it on insert) and PostgreSQL's generated
``messages.search_vector`` (only the models' columns are selected and inserted).

Verification compares, per table, the row count and a checksum computed the same way
on both sides from the values read through SQLAlchemy's types (so a timestamp stored
as text on SQLite and as ``timestamptz`` on PostgreSQL canonicalise alike). The
checksum is a sum of per-row SHA-256 digests modulo 2**256, so it does not depend on
row order: text primary keys sort differently under PostgreSQL collations.
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Integer, Row, Table, bindparam, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from store.db import Database, DatabaseError, masked, normalise_url
from store.models import Base

# A chunk is flushed at whichever limit comes first: many small rows (tickets,
# events) go in big executemany batches, while raw sources and blobs of a few MB
# each must not pile up in memory.
CHUNK_ROWS = 5000
CHUNK_BYTES = 16 * 1024 * 1024
_MOD = 2**256

Progress = Callable[[str, int, int], None]
"""``progress(table, rows_done, rows_total)``, called after every chunk."""


@dataclass(frozen=True)
class TableCheck:
    """One table compared: rows and checksum on each side."""

    name: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str

    @property
    def ok(self) -> bool:
        """Same number of rows with the same content."""
        return self.source_rows == self.target_rows and self.source_sum == self.target_sum


@dataclass(frozen=True)
class CopyReport:
    """What :func:`copy` did and what verification found."""

    source: str  # URL, password masked
    target: str  # URL, password masked
    tables: tuple[TableCheck, ...]
    seconds: float  # copying (one transaction), verification not included
    verify_seconds: float

    @property
    def ok(self) -> bool:
        """True only when every table matches."""
        return all(t.ok for t in self.tables)

    @property
    def rows(self) -> int:
        """Rows copied, all tables together."""
        return sum(t.source_rows for t in self.tables)

    @property
    def mismatched(self) -> list[str]:
        """Names of the tables that differ."""
        return [t.name for t in self.tables if not t.ok]


def tables() -> list[Table]:
    """The tables a copy carries, parents first (alembic_version is set by migrating)."""
    return list(Base.metadata.sorted_tables)


# --------------------------------------------------------------------------- checksums


def _canonical(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return "dt:" + aware.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return "d:" + value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "b:" + bytes(value).hex()
    if isinstance(value, float):
        return "f:" + repr(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value  # str, int, bool, None: JSON says them exactly


def row_digest(values: Sequence[Any]) -> int:
    """A row's SHA-256 over canonical JSON of its values, as an integer."""
    data = json.dumps(
        [_canonical(v) for v in values], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return int.from_bytes(hashlib.sha256(data.encode("utf-8", "surrogatepass")).digest(), "big")


class _Summer:
    """Row count and order-independent checksum, fed one row at a time."""

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    def add(self, values: Sequence[Any]) -> None:
        self.rows += 1
        self.total = (self.total + row_digest(values)) % _MOD

    @property
    def hexdigest(self) -> str:
        return f"{self.total:064x}"


def _stream(conn: Connection, table: Table) -> Iterator[Row[Any]]:
    stmt = select(*table.columns).order_by(*table.primary_key.columns)
    yield from conn.execution_options(yield_per=1000).execute(stmt)


def table_sum(conn: Connection, table: Table) -> tuple[int, str]:
    """Rows and checksum of ``table`` as ``conn`` reads it."""
    summer = _Summer()
    for row in _stream(conn, table):
        summer.add(row)
    return summer.rows, summer.hexdigest


def verify(source: Database, target: Database) -> tuple[TableCheck, ...]:
    """Compare every table of two deskq databases (each read in one transaction)."""
    with _snapshot(source) as src, target.engine.connect() as dst:
        checks = []
        for table in tables():
            rows, digest = table_sum(src, table)
            target_rows, target_digest = table_sum(dst, table)
            checks.append(TableCheck(table.name, rows, target_rows, digest, target_digest))
    return tuple(checks)


# --------------------------------------------------------------------------- copying


def _snapshot(db: Database) -> Any:
    """A connection whose reads all see one consistent state of the database."""
    if db.is_sqlite:
        return db.engine.connect()  # one deferred transaction: a WAL snapshot
    return db.engine.connect().execution_options(isolation_level="REPEATABLE READ")


def _same_database(source: Database, target_url: str, password: str | None) -> bool:
    parsed = normalise_url(target_url, password)
    here = source.engine.url
    if parsed.get_backend_name() != here.get_backend_name():
        return False
    if source.is_sqlite:
        from pathlib import Path

        return (
            bool(parsed.database and here.database)
            and Path(str(parsed.database)).resolve() == Path(str(here.database)).resolve()
        )
    keys = ("host", "port", "database")
    return all(getattr(parsed, k) == getattr(here, k) for k in keys)


def _occupied(conn: Connection) -> dict[str, int]:
    """Tables of the target that hold rows, with their counts."""
    found = {}
    for table in tables():
        n = int(conn.scalar(select(func.count()).select_from(table)) or 0)
        if n:
            found[table.name] = n
    return found


def _refuse_or_clear(conn: Connection, target_shown: str, force: bool) -> None:
    occupied = _occupied(conn)
    if not occupied:
        return
    if not force:
        what = (
            f"{occupied['tickets']:,} tickets"
            if "tickets" in occupied
            else "rows in " + ", ".join(sorted(occupied))
        )
        raise DatabaseError(
            f"the target database {target_shown} already holds {what}: deskq copies only "
            "into an empty database. Fix: choose an empty database, or use --force to "
            "replace its contents with the source's."
        )
    if conn.dialect.name == "sqlite":
        raise DatabaseError(
            f"--force cannot empty the SQLite file {target_shown}: its events table refuses "
            "DELETE (the ticket history is append-only). Fix: delete the file (and its -wal "
            "and -shm files) and copy again; a new file is created."
        )
    # TRUNCATE fires no row-level triggers, so the append-only guard on events stays
    # in place (no DISABLE TRIGGER window, no table-owner privilege needed); naming
    # every table in one statement satisfies the foreign keys between them.
    names = ", ".join(conn.dialect.identifier_preparer.quote(t.name) for t in tables())
    conn.execute(text(f"TRUNCATE TABLE {names}"))


def _self_references(table: Table) -> list[str]:
    """Column keys pointing at the same table (tickets.merged_into_id): inserted later."""
    return [fk.parent.key for fk in table.foreign_keys if fk.column.table is table]


def _size(values: Iterable[Any]) -> int:
    return sum(len(v) for v in values if isinstance(v, str | bytes)) + 64


def _copy_table(
    src: Connection, dst: Connection, table: Table, progress: Progress | None
) -> tuple[int, str]:
    """Stream one table across; returns the source's rows and checksum as read."""
    keys = [c.key for c in table.columns]
    deferred = _self_references(table)
    pk = [c.key for c in table.primary_key.columns]
    total = int(src.scalar(select(func.count()).select_from(table)) or 0)
    summer = _Summer()
    batch: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if batch:
            dst.execute(table.insert(), batch)
            batch.clear()
        size = 0
        if progress is not None:
            progress(table.name, summer.rows, total)

    for row in _stream(src, table):
        summer.add(row)
        values = dict(zip(keys, row, strict=True))
        # A ticket may be merged into a newer one: insert the link once both exist.
        if any(values[k] is not None for k in deferred):
            later.append({f"b_{k}": values[k] for k in pk + deferred})
            values.update(dict.fromkeys(deferred))
        batch.append(values)
        size += _size(row)
        if len(batch) >= CHUNK_ROWS or size >= CHUNK_BYTES:
            flush()
    flush()
    if later:
        stmt = (
            table.update()
            .where(*(table.c[k] == bindparam(f"b_{k}") for k in pk))
            .values({k: bindparam(f"b_{k}") for k in deferred})
        )
        dst.execute(stmt, later)
    return summer.rows, summer.hexdigest


def _reset_sequences(conn: Connection) -> None:
    """Make PostgreSQL's serial sequences continue after the copied ids."""
    for table in tables():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer):
            continue
        seq = conn.scalar(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}
        )
        if seq is None:
            continue
        quote = conn.dialect.identifier_preparer.quote
        conn.execute(
            text(
                f"SELECT setval(:seq, coalesce((SELECT max({quote(pk[0].name)}) "
                f"FROM {quote(table.name)}), 0) + 1, false)"
            ),
            {"seq": seq},
        )


def _check_source_head(source: Database) -> None:
    from store import migrate

    with source.engine.connect() as conn:
        revision = migrate.current_revision(conn)
    if revision != migrate.SCHEMA_HEAD:
        raise DatabaseError(
            f"the source database {masked(source.engine.url)} is at schema {revision}, not "
            f"{migrate.SCHEMA_HEAD}. Fix: run deskq db upgrade first."
        )


def _copy_all(
    source: Database, target: Database, target_shown: str, force: bool, progress: Progress | None
) -> dict[str, tuple[int, str]]:
    sums: dict[str, tuple[int, str]] = {}
    engine = target.engine
    if target.is_sqlite:
        engine = engine.execution_options(sqlite_begin="IMMEDIATE")
    with _snapshot(source) as src, engine.connect() as dst, dst.begin():
        _refuse_or_clear(dst, target_shown, force)
        for table in tables():
            try:
                sums[table.name] = _copy_table(src, dst, table, progress)
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise DatabaseError(
                    f"copying table {table.name} to {target_shown} failed: {reason}. "
                    "Nothing was written (the copy is one transaction). Fix: the cause "
                    "above, then copy again (run with --debug for details)."
                ) from exc
        if not target.is_sqlite:
            _reset_sequences(dst)
    return sums


def copy(
    source: Database,
    target_url: str,
    *,
    password: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy every deskq table of ``source`` into the database at ``target_url``.

    The target is migrated to the schema head, must be empty (or ``force``: its deskq
    tables are emptied first) and receives everything in one transaction. Afterwards it
    is read back on a new connection and compared with what was read from the source.
    """
    target_shown = masked(normalise_url(target_url, password))
    if _same_database(source, target_url, password):
        raise DatabaseError(
            f"the target {target_shown} is the source database itself. "
            "Fix: give --to the URL of another database."
        )
    _check_source_head(source)
    target = Database.open(target_url, password=password, upgrade=True)
    try:
        started = time.perf_counter()
        sums = _copy_all(source, target, target_shown, force, progress)
        copied = time.perf_counter() - started
        target.engine.dispose()  # read back through a new connection, after the commit
        with target.engine.connect() as dst:
            # Statistics for the planner now, not when autovacuum gets round to it: with
            # none, pages read through row-level security were ten times slower.
            dst.execute(text("ANALYZE"))
            dst.commit()
        checks = []
        with target.engine.connect() as dst:
            for table in tables():
                rows, digest = sums[table.name]
                target_rows, target_digest = table_sum(dst, table)
                checks.append(TableCheck(table.name, rows, target_rows, digest, target_digest))
        verified = time.perf_counter() - started - copied
    finally:
        target.close()
    return CopyReport(masked(source.engine.url), target_shown, tuple(checks), copied, verified)
