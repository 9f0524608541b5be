"""store.peek: a sync state read with the standard library alone (for the early start
of ``deskq poll``), the same as the database layer reads, or None when unsure."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import peek
from store.db import Database
from store.models import MailboxState
from tests.support import modules_loaded_by


def test_names_are_the_models() -> None:
    table = MailboxState.__table__
    assert table.name == peek.TABLE
    assert set(peek.COLUMNS) <= set(table.columns.keys())


def test_reads_what_the_database_layer_wrote(tmp_path: Path) -> None:
    path = tmp_path / "deskq.db"
    url = f"sqlite:///{path}"
    assert peek.sync_state(url, "helpdesk", "INBOX") is None  # no database yet
    db = Database.open(url)
    assert peek.sync_state(url, "helpdesk", "INBOX") == (None, 0)  # nothing recorded yet
    with db.write() as s:
        s.add(MailboxState(mailbox="helpdesk", folder="INBOX", uidvalidity=77, last_uid=1234))
        s.add(MailboxState(mailbox="helpdesk", folder="Other", uidvalidity=5, last_uid=9))
    assert peek.sync_state(url, "helpdesk", "INBOX") == (77, 1234)
    assert peek.sync_state(url, "helpdesk", "Other") == (5, 9)
    assert peek.sync_state(url, "another", "INBOX") == (None, 0)
    with db.write() as s:  # a write under way does not block it (WAL)
        s.get_one(MailboxState, ("helpdesk", "INBOX")).last_uid = 2000
        assert peek.sync_state(url, "helpdesk", "INBOX") == (77, 1234)
    assert peek.sync_state(url, "helpdesk", "INBOX") == (77, 2000)
    db.close()
    assert not list(tmp_path.glob("*-journal"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://deskq@db.example/deskq",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:deskq.db?mode=ro&uri=true",
        "sqlite:///{tmp}/not-a-database.db",
        "sqlite:///{tmp}/missing.db",
    ],
)
def test_anything_else_is_none(url: str, tmp_path: Path) -> None:
    (tmp_path / "not-a-database.db").write_bytes(b"plain text, not SQLite\n" * 100)
    assert peek.sync_state(url.format(tmp=tmp_path), "helpdesk", "INBOX") is None
    assert not (tmp_path / "missing.db").exists()  # never created


def test_a_home_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert peek.sqlite_file("sqlite:///~/deskq.db") == tmp_path / "deskq.db"


def test_imports_no_database_layer() -> None:
    """It runs while `deskq poll` is still importing SQLAlchemy: it must not wait on it."""
    code = "import store.peek, mail.imapwire"
    assert modules_loaded_by(code, ("sqlalchemy", "store.models")) == []
