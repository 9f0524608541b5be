"""Schema migrations: keep every database at the head revision this deskq knows.

Start-up pays only for one ``SELECT`` from ``alembic_version`` when the schema is
already current; Alembic itself is imported only when there is work to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, inspect, text

from store.db import DatabaseError, masked

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

# Told each line of a migration's progress (besides the log): e.g. a terminal's stderr.
Report = Callable[[str], None]

# The newest revision in store/migrations/versions (a test keeps these in step).
SCHEMA_HEAD = "0014"
MIGRATIONS = Path(__file__).parent / "migrations"
# Arbitrary constant key for pg_advisory_xact_lock: one migrator at a time.
_PG_LOCK_KEY = 0x6465736B71


# Objects maintained by hand-written SQL in the migrations (full-text search), which
# the models deliberately do not describe; autogenerate must not try to drop them.
HAND_MADE_TABLE_PREFIX = "messages_fts"
HAND_MADE_COLUMNS = {("messages", "search_vector")}
HAND_MADE_INDEXES = {"ix_messages_search_vector"}


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic hook: keep autogenerate away from the full-text search objects."""
    if type_ == "table" and name and name.startswith(HAND_MADE_TABLE_PREFIX):
        return False
    if type_ == "column" and (getattr(obj.table, "name", None), name) in HAND_MADE_COLUMNS:
        return False
    return not (type_ == "index" and name in HAND_MADE_INDEXES)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config pointing at deskq's migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, or None for an empty database."""
    if not inspect(conn).has_table("alembic_version"):
        tables = [t for t in inspect(conn).get_table_names() if not t.startswith("sqlite_")]
        if tables:
            raise DatabaseError(
                f"the database {masked(conn.engine.url)} holds tables "
                f"({', '.join(sorted(tables)[:5])}...) but no deskq schema version: "
                "it belongs to something else. "
                "Fix: point [database] url at an empty or deskq database."
            )
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return row[0] if row else None


def known_revisions() -> set[str]:
    """Every revision this deskq ships."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def _refuse_newer(conn: Connection, revision: str | None) -> None:
    if revision is None or revision == SCHEMA_HEAD or revision in known_revisions():
        return
    raise DatabaseError(
        f"the database {masked(conn.engine.url)} was migrated by a newer deskq (schema revision "
        f"{revision}; this deskq knows up to {SCHEMA_HEAD}). Fix: upgrade deskq "
        "(pip install -U deskq) on this machine; deskq never downgrades a database."
    )


def check_not_newer(engine: Engine) -> str | None:
    """Raise :class:`DatabaseError` if a newer deskq migrated this database."""
    with engine.connect() as conn:
        revision = current_revision(conn)
        _refuse_newer(conn, revision)
        return revision


def upgrade(engine: Engine, report: Report | None = None) -> bool:
    """Migrate to head; returns whether anything was applied. Safe to run concurrently.

    Migrating a database that holds deskq's data says so first (it may take minutes
    on a large one, with every other deskq process waiting), then each step as it
    is applied, with its time: logged, and told to ``report`` too. A new, empty
    database is set up without a word.
    """
    if check_not_newer(engine) == SCHEMA_HEAD:
        return False
    from alembic import command

    locked = engine.execution_options(sqlite_begin="IMMEDIATE")
    with locked.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        revision = current_revision(conn)  # another process may have migrated meanwhile
        _refuse_newer(conn, revision)
        if revision == SCHEMA_HEAD:
            return False
        config = alembic_config(conn)
        progress = _Progress(engine, revision, report) if revision is not None else None
        config.attributes["on_step"] = progress
        command.upgrade(config, "head")
        if progress is not None:
            progress.done()
    return True


class _Progress:
    """Says what a migration of an existing database is doing, step by step."""

    def __init__(self, engine: Engine, revision: str, report: Report | None) -> None:
        self.report = report
        self.begun = self.last = time.monotonic()
        steps = _steps_after(revision)
        self.total, self.count = len(steps), 0
        self.say(
            f"migrating the database {masked(engine.url)} from schema {revision} to "
            f"{SCHEMA_HEAD} ({self.total} step{'s' if self.total != 1 else ''}); on a large "
            "database this takes a while, and other deskq processes wait: let it finish"
        )

    def say(self, line: str) -> None:
        log.info("%s", line)
        if self.report is not None:
            self.report(line)

    def __call__(self, revision: str, doc: str) -> None:
        """Alembic applied ``revision`` (see migrations/env.py)."""
        now = time.monotonic()
        self.count += 1
        what = f" ({doc.strip().splitlines()[0]})" if doc.strip() else ""
        self.say(
            f"schema {revision}{what} applied in {now - self.last:.1f} s "
            f"[{self.count}/{self.total}]"
        )
        self.last = now

    def done(self) -> None:
        self.say(
            f"database migrated to schema {SCHEMA_HEAD} in {time.monotonic() - self.begun:.1f} s"
        )


def _steps_after(revision: str) -> list[str]:
    """The revisions from ``revision`` (excluded) up to the head, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    steps = [rev.revision for rev in script.iterate_revisions("head", revision)]
    return list(reversed(steps))
