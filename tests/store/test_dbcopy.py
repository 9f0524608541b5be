"""``deskq db copy``: a demo SQLite database copied to PostgreSQL (and SQLite), verified.

The source is built the way a user gets one: the demo mail ingested by the poller and
triaged through the services (messages, attachments, raw sources, events, clocks...),
plus one ticket merged into a newer one so a self-reference points forwards.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Connection, Table, func, select, text, update

from mail.poller import poll_once
from store import dbcopy, pages, services
from store.config import load_settings
from store.db import Database, DatabaseError
from store.models import Attachment, Blob, Event, Message, Person, Queue, Ticket
from store.query import parse_query
from store.workspace import Workspace, open_workspace
from tests.cli.test_cli import DESKQ, demo_workspace, run
from tui import demo

DEMO_COUNT = 60
MUST_HAVE_ROWS = (
    "queues",
    "people",
    "tickets",
    "messages",
    "raw_sources",
    "blobs",
    "attachments",
    "events",
    "ticket_clocks",
    "ticket_tags",
    "ticket_links",
    "ticket_reads",
    "mailbox_state",
    "deskq_meta",
)


def _merge_forwards(ws: Workspace) -> tuple[int, int]:
    """Merge the oldest ticket into the newest: merged_into_id > id."""
    with ws.db.write() as s:
        first = s.scalars(select(Ticket).order_by(Ticket.id).limit(1)).one()
        last = s.scalars(select(Ticket).order_by(Ticket.id.desc()).limit(1)).one()
        actor = services.get_or_create_person(s, ws.settings.me)
        services.merge(s, first.id, first.version, last.id, last.version, actor)
        return first.id, last.id


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo workspace on SQLite for the module; each test copies its file."""
    root = tmp_path_factory.mktemp("dbcopy-demo")
    ws = open_workspace(load_settings(demo.create(root, count=DEMO_COUNT)))
    try:
        assert [s.last_error for s in poll_once(ws)] == [""]
        demo.seed_activity(ws)
        _merge_forwards(ws)
    finally:
        ws.close()
    return root


@pytest.fixture
def source(demo_template: Path, tmp_path: Path) -> Iterator[Workspace]:
    """A private copy of the demo workspace (the copy must never change the source)."""
    shutil.copytree(demo_template / "Maildir", tmp_path / "Maildir")
    src, dst = sqlite3.connect(demo_template / "deskq.db"), sqlite3.connect(tmp_path / "deskq.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    config = tmp_path / "config.toml"
    config.write_text(demo.demo_config(tmp_path), encoding="utf-8")
    ws = open_workspace(load_settings(config))
    yield ws
    ws.close()


def _counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0)
            for t in dbcopy.tables()
        }


def _search(db: Database, words: str) -> set[int]:
    with db.session() as s:
        return {row.ticket.id for row in pages.fetch_page(s, parse_query(words), None, limit=500)}


# ------------------------------------------------------------------ checksums


def test_row_digest_is_canonical() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    cest = at.astimezone(timezone(timedelta(hours=2)))
    assert dbcopy.row_digest([at, b"\x00\xff", {"b": 1, "a": [0.1]}]) == dbcopy.row_digest(
        [cest, memoryview(b"\x00\xff"), {"a": [0.1], "b": 1}]
    )
    assert dbcopy.row_digest([1]) != dbcopy.row_digest([1.0])
    assert dbcopy.row_digest(["x", None]) != dbcopy.row_digest([None, "x"])
    assert dbcopy.row_digest([0.1 + 0.2]) != dbcopy.row_digest([0.3])


# ------------------------------------------------------------------ SQLite targets


def test_copy_to_sqlite_round_trip_keeps_search(source: Workspace, tmp_path: Path) -> None:
    target_url = f"sqlite:///{tmp_path / 'copy' / 'deskq.db'}"
    report = dbcopy.copy(source.db, target_url)
    assert report.ok, report.tables
    counts = _counts(source.db)
    assert {t.name: t.target_rows for t in report.tables} == counts
    assert all(counts[name] > 0 for name in MUST_HAVE_ROWS), counts
    target = Database.open(target_url)
    try:
        assert _search(target, "password") == _search(source.db, "password") != set()
        assert all(t.ok for t in dbcopy.verify(source.db, target))
    finally:
        target.close()
    with pytest.raises(DatabaseError, match="--force"):
        dbcopy.copy(source.db, target_url)
    with pytest.raises(DatabaseError, match="delete the file"):
        dbcopy.copy(source.db, target_url, force=True)


def test_copy_onto_itself_is_refused(source: Workspace) -> None:
    with pytest.raises(DatabaseError, match="is the source database itself"):
        dbcopy.copy(source.db, str(source.db.engine.url), force=True)


# ------------------------------------------------------------------ PostgreSQL targets


@pytest.mark.postgres
def test_copy_to_postgresql_is_complete_and_verified(source: Workspace, pg_url: str) -> None:
    seen: list[tuple[str, int, int]] = []
    started = time.perf_counter()
    report = dbcopy.copy(source.db, pg_url, progress=lambda *a: seen.append(a))
    elapsed = time.perf_counter() - started
    assert report.ok, [t for t in report.tables if not t.ok]
    counts = _counts(source.db)
    assert {t.name: (t.source_rows, t.target_rows) for t in report.tables} == {
        name: (n, n) for name, n in counts.items()
    }
    assert all(counts[name] > 0 for name in MUST_HAVE_ROWS), counts
    assert all(t.source_sum == t.target_sum for t in report.tables)
    assert ("messages", counts["messages"], counts["messages"]) in seen
    print(f"\ncopied {report.rows:,} rows in {elapsed:.2f} s ({report.rows / elapsed:,.0f} rows/s)")

    target = Database.open(pg_url)
    try:
        # Checked again independently, both sides read afresh.
        assert all(t.ok for t in dbcopy.verify(source.db, target))
        with target.session() as s:
            # The generated tsvector was computed by PostgreSQL for every copied message.
            missing = s.scalar(text("SELECT count(*) FROM messages WHERE search_vector IS NULL"))
            assert missing == 0
            merged = s.scalars(select(Ticket).where(Ticket.merged_into_id.is_not(None))).all()
            assert merged and all(t.merged_into_id and t.merged_into_id > t.id for t in merged)
            attachment = s.scalars(select(Attachment).order_by(Attachment.id).limit(1)).one()
            blob = s.get(Blob, attachment.sha256)
            assert blob is not None and len(blob.content()) == attachment.size
        for words in ("password", "printer"):
            assert _search(target, words) == _search(source.db, words) != set()
    finally:
        target.close()


@pytest.mark.postgres
def test_new_rows_after_copy_continue_the_ids(source: Workspace, pg_url: str) -> None:
    assert dbcopy.copy(source.db, pg_url).ok
    with source.db.session() as s:
        last_ticket = s.scalar(select(func.max(Ticket.id)))
        last_event = s.scalar(select(func.max(Event.id)))
        last_message = s.scalar(select(func.max(Message.id)))
    target = Database.open(pg_url)
    try:
        with target.write() as s:
            queue = s.scalars(select(Queue).order_by(Queue.id).limit(1)).one()
            person = services.get_or_create_person(s, "newcomer@example.org")
            ticket = services.open_ticket(
                s, queue=queue, requester=person, subject="Zanzibar after the move"
            )
            note = services.add_note(s, ticket.id, ticket.version, person, "quokka notes")
        assert last_ticket is not None and ticket.id == last_ticket + 1
        with target.session() as s:
            assert (s.scalar(select(func.max(Event.id))) or 0) > (last_event or 0)
            assert (s.scalar(select(func.max(Message.id))) or 0) > (last_message or 0)
            assert s.scalar(select(Person.id).where(Person.address == "newcomer@example.org"))
        assert note is not None
        assert _search(target, "quokka") == {ticket.id}
        assert ticket.id in _search(target, "zanzibar")
    finally:
        target.close()


@pytest.mark.postgres
def test_second_copy_needs_force(source: Workspace, pg_url: str) -> None:
    assert dbcopy.copy(source.db, pg_url).ok
    tickets = _counts(source.db)["tickets"]
    with pytest.raises(DatabaseError, match=f"already holds {tickets:,} tickets") as refused:
        dbcopy.copy(source.db, pg_url)
    assert "--force" in str(refused.value) and "choose an empty database" in str(refused.value)
    # The source changes; a forced copy replaces everything (events included, whose
    # append-only trigger still refuses a DELETE afterwards).
    with source.db.write() as s:
        person = services.get_or_create_person(s, "late@example.org")
        queue = s.scalars(select(Queue).limit(1)).one()
        services.open_ticket(s, queue=queue, requester=person, subject="late arrival")
    report = dbcopy.copy(source.db, pg_url, force=True)
    assert report.ok
    assert {t.name: t.target_rows for t in report.tables} == _counts(source.db)
    target = Database.open(pg_url)
    try:
        with pytest.raises(Exception, match="append-only"), target.write() as s:
            s.execute(text("DELETE FROM events"))
    finally:
        target.close()


@pytest.mark.postgres
def test_a_changed_row_is_reported(source: Workspace, pg_url: str) -> None:
    assert dbcopy.copy(source.db, pg_url).ok
    target = Database.open(pg_url)
    try:
        with target.write() as s:
            first = s.scalar(select(func.min(Message.id)))
            s.execute(update(Message).where(Message.id == first).values(text_body="tampered"))
        checks = {t.name: t for t in dbcopy.verify(source.db, target)}
    finally:
        target.close()
    assert not checks["messages"].ok
    assert checks["messages"].source_rows == checks["messages"].target_rows
    assert checks["messages"].source_sum != checks["messages"].target_sum
    assert [name for name, t in checks.items() if not t.ok] == ["messages"]


@pytest.mark.postgres
@pytest.mark.skipif(not DESKQ.exists(), reason=f"no deskq script at {DESKQ}")
def test_cli_db_copy(tmp_path: Path, pg_url: str) -> None:
    env, _root = demo_workspace(tmp_path)
    # Trust authentication ignores the password: it is there to check it never shows.
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@")
    result = run(env, "db", "copy", "--to", url)
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:-1]}
    assert set(lines) == {t.name for t in dbcopy.tables()}
    assert all(line.endswith("  OK") for line in lines.values()), result.stdout
    assert "MISMATCH" not in result.stdout
    assert "postgres:***@" in result.stdout

    again = run(env, "db", "copy", "--to", url)
    assert again.returncode == 1
    assert again.stderr.startswith("deskq: the target database postgresql+psycopg://postgres:***@")
    assert "--force" in again.stderr and "s3cret-pw" not in again.stderr
    assert again.stderr.count("\n") == 1
    forced = run(env, "db", "copy", "--to", url, "--force")
    assert forced.returncode == 0, forced.stderr


def test_cli_reports_a_mismatch(
    source: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tui import cli

    real = dbcopy.table_sum

    def tampered(conn: Connection, table: Table) -> tuple[int, str]:
        rows, digest = real(conn, table)
        return (rows, "0" * 64) if table.name == "events" else (rows, digest)

    monkeypatch.setattr(dbcopy, "table_sum", tampered)
    config = str(source.settings.path)
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    assert cli.main(["--config", config, "db", "copy", "--to", target]) == 1
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines() if "MISMATCH" in line] == ["events"]
    assert err.startswith("deskq: the copy in sqlite:///") and "in events" in err
