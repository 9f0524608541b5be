"""Background WAL checkpoints: commits only append, a thread copies the log into the file."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import make_url, text

from store import db as db_module
from store.db import Database, _is_file_path
from tests.support import empty_database_with_4k_pages

CHUNK = os.urandom(1 << 20)  # incompressible, one MB


def _autocheckpoint(db: Database) -> int:
    """The log size at which a commit checkpoints, in bytes (0: never)."""
    with db.write() as s:
        pages = int(s.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())
        return pages * int(s.execute(text("PRAGMA page_size")).scalar_one())


DEFAULT = 4 << 20  # SQLite's default: 1,000 pages of 4 KB


def _write_mb(db: Database, count: int, pause: float = 0.0) -> None:
    for _ in range(count):
        with db.write() as s:
            s.execute(text("INSERT INTO junk (data) VALUES (:d)"), {"d": CHUNK})
        time.sleep(pause)


def _wait_for(predicate: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_the_log_is_copied_by_the_thread_not_by_commits(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = Database.open(f"sqlite:///{path}")
    with db.write() as s:
        s.execute(text("CREATE TABLE junk (data BLOB)"))
    start = path.stat().st_size
    assert _autocheckpoint(db) == DEFAULT
    with db.background_checkpoints():
        assert _autocheckpoint(db) == 0  # the committing connection leaves the log alone
        _write_mb(db, 12)
        # The thread copies the log into the database file by itself.
        assert _wait_for(lambda: path.stat().st_size >= start + (12 << 20))
    assert _autocheckpoint(db) == DEFAULT  # back to SQLite's default afterwards
    db.close()


def test_without_the_thread_commits_checkpoint_as_usual(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = Database.open(f"sqlite:///{path}")
    with db.write() as s:
        s.execute(text("CREATE TABLE junk (data BLOB)"))
    _write_mb(db, 6)  # past 4 MB of log: a commit checkpoints
    assert path.stat().st_size >= 4 << 20
    db.close()


def test_databases_with_4_kb_pages_checkpoint_at_the_same_size(tmp_path: Path) -> None:
    db = Database.open(empty_database_with_4k_pages(tmp_path / "old.db"))
    with db.write() as s:
        assert s.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == 1024
    assert _autocheckpoint(db) == DEFAULT
    db.close()


def test_no_op_for_memory_databases() -> None:
    db = Database.open("sqlite:///:memory:")
    with db.background_checkpoints():
        assert db._wal["autocheckpoint"] == DEFAULT
    db.close()


def test_the_log_starts_over_under_a_writer_that_never_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-to-back write transactions never find the log wholly copied by themselves:
    without the writer's catch-up the log would grow as large as everything written."""
    monkeypatch.setattr(db_module, "CHECKPOINT_BYTES", 1 << 20)
    monkeypatch.setattr(db_module, "RESTART_BYTES", 4 << 20)
    path = tmp_path / "x.db"
    db = Database.open(f"sqlite:///{path}")
    with db.write() as s:
        s.execute(text("CREATE TABLE junk (data BLOB)"))
    with db.background_checkpoints():
        _write_mb(db, 80, pause=0.01)  # about the pace of a bulk import
        largest = Path(f"{path}-wal").stat().st_size
    assert largest < 40 << 20, largest
    db.close()


def test_commits_checkpoint_again_when_the_thread_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.db"
    db = Database.open(f"sqlite:///{path}")

    def refuse(*_args: object, **_kw: object) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    # The thread's own connection fails (the engine's connections are left alone).
    monkeypatch.setattr(db_module, "sqlite3", SimpleNamespace(connect=refuse, Error=sqlite3.Error))
    with db.background_checkpoints():
        assert _wait_for(lambda: db._wal["autocheckpoint"] == DEFAULT)
        assert _autocheckpoint(db) == DEFAULT
    db.close()


def test_uri_filenames_keep_sqlites_own_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = Database.open(f"sqlite:///file:{tmp_path / 'x.db'}?uri=true")
    with db.background_checkpoints():
        assert _autocheckpoint(db) == DEFAULT
    db.close()
    assert (tmp_path / "x.db").exists()
    assert not (tmp_path / "file:").exists()  # a URI is not a folder to create


@pytest.mark.parametrize(
    ("url", "plain"),
    [
        ("sqlite:////srv/deskq.db", True),
        ("sqlite:////srv/deskq.db?uri=false", True),  # read as SQLAlchemy reads it
        ("sqlite:////srv/deskq.db?uri=true", False),
        ("sqlite:///file:/srv/deskq.db?uri=true&mode=rw", False),
        ("sqlite://", False),
        ("sqlite:///:memory:", False),
    ],
)
def test_which_urls_name_a_plain_file(url: str, plain: bool) -> None:
    """Only a plain path gets a folder made for it and background checkpoints."""
    assert _is_file_path(make_url(url)) is plain
