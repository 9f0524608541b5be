"""Opening the database: engines tuned per backend, sessions, schema at head.

The caller owns the session: one per user action or worker pass. Reads use
:meth:`Database.session`; anything that writes uses :meth:`Database.write`, which on
SQLite starts with ``BEGIN IMMEDIATE`` so a second writer waits ``busy_timeout``
for the lock instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import asbool

log = logging.getLogger(__name__)


class DatabaseError(Exception):
    """The database cannot be used; the message is meant for the user as-is."""


def masked(url: str | URL) -> str:
    """The URL with any password replaced by ``***``, safe for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def normalise_url(url: str, password: str | None = None) -> URL:
    """Parse ``url``, expand ``~`` in SQLite paths and inject a password kept elsewhere."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
        raise DatabaseError(
            f"database url {shown!r} is not a valid URL. Fix: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DBNAME."
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"database url {masked(parsed)}: deskq supports SQLite and PostgreSQL, not {backend}."
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and _is_file_path(parsed):
        parsed = parsed.set(database=str(Path(parsed.database or "").expanduser()))
    if password is not None:
        parsed = parsed.set(password=password)
    return parsed


def _unicode_lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def _is_file_path(url: URL) -> bool:
    """A SQLite database named by a plain path: not in memory, not a URI filename."""
    path = url.database
    uri = asbool(url.query.get("uri", False))  # read as SQLAlchemy reads it ("false", "0")
    return bool(path) and path != ":memory:" and not (path or "").startswith("file:") and not uri


# Page size of new SQLite databases. An email's text is often larger than SQLite's
# default 4 KB page: with 16 KB pages it takes a quarter as many, each written to the
# log and copied into the database with one call instead of four. A 10,000-email
# import makes a third as many write calls and takes 5 % less time. Databases made
# before keep their pages (SQLite changes them only on a VACUUM outside WAL mode).
PAGE_SIZE = 16384
# Log after which a committing connection checkpoints (outside background_checkpoints):
# SQLite's default of 1,000 pages of 4 KB, the same in bytes whatever the page size.
AUTOCHECKPOINT_BYTES = 4 << 20


def _sqlite_engine(url: URL, busy_timeout_ms: int, cache_mb: int, **kw: Any) -> Engine:
    if _is_file_path(url):
        try:
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"cannot create the folder for {url.database}: {exc.strerror}. "
                "Fix: choose a writable path in [database] url."
            ) from None
    engine = create_engine(url, **kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Before anything is written (a no-op on a database that has its pages): see
        # PAGE_SIZE.
        cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA cache_size = {-1024 * int(cache_mb)}")  # KiB, per connection
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()
        # SQLite's lower() folds ASCII only; filters on names use this for other letters.
        dbapi_conn.create_function("deskq_lower", 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Log after which a committing connection copies it into the database:
        # SQLite's default, or none while Database.background_checkpoints runs.
        wal = conn.get_execution_options().get("deskq_wal")
        wanted = wal["autocheckpoint"] if wal else AUTOCHECKPOINT_BYTES
        if conn.info.get("wal_autocheckpoint") != wanted:  # per connection, kept by the pool
            page = conn.info.get("page_size")
            if page is None:
                page = int(conn.exec_driver_sql("PRAGMA page_size").scalar())
                conn.info["page_size"] = page
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {-(-int(wanted) // page)}")
            conn.info["wal_autocheckpoint"] = wanted
        if wal and wal.get("catch_up"):
            # PASSIVE: never waits for readers or writers (a lease renewal may be the
            # one beginning); if the checkpoint thread is busy, the flag comes back.
            wal["catch_up"] = False
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def make_engine(
    url: str | URL,
    *,
    password: str | None = None,
    busy_timeout_ms: int = 10_000,
    echo: bool = False,
    cache_mb: int = 64,
) -> Engine:
    """An engine for ``url`` with deskq's per-backend settings (WAL, foreign keys...)."""
    parsed = url if isinstance(url, URL) else normalise_url(url, password)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed, busy_timeout_ms, cache_mb, echo=echo)
        # A session that sits in a transaction doing nothing for a minute (a frozen
        # poller, a dropped laptop) is ended by the server, so the row locks it holds
        # (a mailbox lease among them) do not outlive it by hours.
        options = str(parsed.query.get("options", ""))
        if "idle_in_transaction_session_timeout" not in options:
            options = f"{options} -c idle_in_transaction_session_timeout=60s".strip()
        parsed = parsed.update_query_dict({"options": options})
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"database url {masked(parsed)} needs the Python module {exc.name!r}, which is not "
            "installed. Fix: use postgresql+psycopg:// and pip install 'deskq[postgres]'."
        ) from None


class Database:
    """An opened deskq database: engine, read sessions and write transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._wal: dict[str, Any] = {"autocheckpoint": AUTOCHECKPOINT_BYTES, "catch_up": False}
        write_engine = (
            engine.execution_options(sqlite_begin="IMMEDIATE", deskq_wal=self._wal)
            if self.is_sqlite
            else engine
        )
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)
        self.keeper: Any = None  # store.clocks.Keeper once keep_clocks() was called

    @classmethod
    def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        busy_timeout_ms: int = 10_000,
        upgrade: bool = True,
        cache_mb: int = 64,
        report: Any = None,
    ) -> Database:
        """Connect, check the schema and (by default) migrate it to head.

        ``report(line)``: told how a migration goes (see :func:`store.migrate.upgrade`).

        ``cache_mb`` is SQLite's page cache per connection: large for bulk ingestion,
        small for the TUI, whose few rows per page need little and whose memory counts.
        """
        from store import migrate

        engine = make_engine(
            url, password=password, busy_timeout_ms=busy_timeout_ms, cache_mb=cache_mb
        )
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except (OperationalError, SADatabaseError) as exc:
            engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise DatabaseError(
                f"cannot open the database {masked(engine.url)}: {reason}. Fix: check [database] "
                "url in the config, that the server is running and the path is writable."
            ) from None
        db = cls(engine)
        if upgrade:
            migrate.upgrade(db.engine, report)
        else:
            migrate.check_not_newer(db.engine)
        return db

    def keep_clocks(self, keeper: Any, progress: Any = None, *, rebuild: bool = True) -> int:
        """Keep SLA clocks in step on every write from now on, rebuilding them if stale.

        ``keeper`` is a :class:`store.clocks.Keeper`; returns how many tickets' clocks
        were (re)computed now (see :func:`store.clocks.ensure`). ``rebuild=False``: a
        role that sees part of the tickets only must not recompute the rest.
        """
        from store import clocks

        self.keeper = keeper
        clocks.install(self._write, keeper)
        return clocks.ensure(self._write, keeper, progress) if rebuild else 0

    def session(self) -> Session:
        """A session for reading (use as a context manager)."""
        return self._read()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session inside one transaction that commits on success, rolls back on error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def background_checkpoints(self) -> Iterator[None]:
        """SQLite: copy the write-ahead log into the database in a thread of its own.

        By default the connection that commits does it, in the writer's time: a third
        of each commit of a bulk import. Inside this block commits only append to the
        log, and a thread checkpoints (PASSIVE: never blocking readers or writers)
        whenever the log passes 4 MB. Nothing changes for other processes. A no-op on
        PostgreSQL and for in-memory databases.
        """
        url = self.engine.url
        path = url.database
        if not self.is_sqlite or not _is_file_path(url):
            # nothing to copy, or a URI filename this thread would not open the same way
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(
            target=_checkpoint_loop,
            args=(path, stop, self._wal),
            name="wal-checkpoint",
            daemon=True,
        )
        self._wal["autocheckpoint"] = 0
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
            self._wal["autocheckpoint"] = AUTOCHECKPOINT_BYTES

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()


CHECKPOINT_BYTES = 4 << 20  # a PASSIVE checkpoint once the log is this large
RESTART_BYTES = 64 << 20  # the writer helps the log start over past this much


def _checkpoint_loop(path: str, stop: threading.Event, wal: dict[str, Any]) -> None:
    log_file = Path(f"{path}-wal")
    try:
        conn = sqlite3.connect(path, timeout=1.0, isolation_level=None, check_same_thread=False)
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    except sqlite3.Error:
        log.warning("background checkpoints unavailable for %s", path, exc_info=True)
        wal["autocheckpoint"] = AUTOCHECKPOINT_BYTES  # commits checkpoint again, as by default
        return
    try:
        while True:
            stopping = stop.wait(0.1)
            try:
                if stopping or log_file.stat().st_size >= CHECKPOINT_BYTES:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    # The log starts over only when a writer begins with all of it
                    # copied, which a busy writer never finds: it would grow without
                    # end. Past RESTART_BYTES the next writer copies the little that
                    # is left itself, before it begins (see _on_begin).
                    wal["catch_up"] = frames * page >= RESTART_BYTES
            except (OSError, sqlite3.Error):  # no log yet, or busy: the next round
                log.debug("checkpoint of %s skipped", path, exc_info=True)
            if stopping:
                return
    except BaseException:
        log.exception("background checkpoints of %s stopped", path)
        raise
    finally:
        wal["autocheckpoint"] = AUTOCHECKPOINT_BYTES  # whatever ended the thread: commits do
        conn.close()
