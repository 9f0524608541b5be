"""The store on SQLite and on a real PostgreSQL: schema, triage services, search, history."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from store import codec, migrate, services
from store.config import parse_settings
from store.db import PAGE_SIZE, Database, DatabaseError, masked
from store.models import Direction, Event, Message, Person, Priority, Queue, Status, Ticket
from store.views import iter_tickets, search_ticket_ids, ticket_detail
from store.workspace import open_workspace, sync_queues
from tests.servers import PostgresCluster
from tests.support import empty_database_with_4k_pages

CONFIG = """
me = "alice@corp.example"
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
aliases = ["it@corp.example"]
[[queue]]
key = "hr"
name = "HR"
tag = "HR"
address = "hr@corp.example"
"""


def _setup(db: Database) -> None:
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))


def _new_ticket(
    db: Database, subject: str = "VPN is down", body: str = "since this morning", queue: str = "it"
) -> int:
    with db.write() as s:
        q = s.scalar(select(Queue).where(Queue.key == queue))
        assert q is not None
        requester = services.get_or_create_person(s, "Bob@Corp.Example", "Bob")
        t = services.open_ticket(s, queue=q, requester=requester, subject=subject)
        s.add(
            Message(
                ticket_id=t.id,
                direction=Direction.INBOUND,
                from_addr="bob@corp.example",
                subject=subject,
                text_body=body,
                message_id="<m1@corp.example>",
                threaded_by="new ticket",
            )
        )
        return t.id


def _person(db: Database, address: str) -> Person:
    with db.write() as s:
        return services.get_or_create_person(s, address, provider=True)


@pytest.fixture
def ready(db: Database) -> Database:
    _setup(db)
    return db


def test_migrations_from_empty_and_models_match(db: Database) -> None:
    """The migrated schema is exactly what the models describe (autogenerate finds nothing)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from store.models import Base

    with db.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.SCHEMA_HEAD
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": migrate.include_object,
                "target_metadata": Base.metadata,
            },
        )
        assert compare_metadata(ctx, Base.metadata) == []


def test_schema_head_matches_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_current_head() == migrate.SCHEMA_HEAD


def test_upgrade_and_downgrade_round_trip(db_url: str) -> None:
    """Every migration can be undone and redone (the downgrade path is not dead code)."""
    from alembic import command

    db = Database.open(db_url)
    with db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    with db.engine.connect() as conn:
        assert migrate.current_revision(conn) is None
    assert migrate.upgrade(db.engine) is True
    assert migrate.upgrade(db.engine) is False
    db.close()


def test_migrating_a_database_in_use_says_how_it_goes(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing database: what is migrated, then each step with its time (a large
    database takes a while and every other deskq process waits). A new one: silent."""
    from alembic import command

    db, _ = _one_ticket_at(db_url, "0011")
    lines: list[str] = []
    caplog.set_level(logging.INFO, logger="store.migrate")
    assert migrate.upgrade(db.engine, lines.append) is True
    head = int(migrate.SCHEMA_HEAD)
    steps = [f"{n:04d}" for n in range(12, head + 1)]
    assert lines[0].startswith("migrating the database ")
    assert lines[0].endswith(
        f" from schema 0011 to {migrate.SCHEMA_HEAD} ({len(steps)} steps); on a large "
        "database this takes a while, and other deskq processes wait: let it finish"
    )
    assert lines[0].startswith(f"migrating the database {masked(db.engine.url)} from")
    for i, (line, step) in enumerate(zip(lines[1:-1], steps, strict=True), start=1):
        assert re.fullmatch(
            rf"schema {step} \(.+\) applied in \d+\.\d s \[{i}/{len(steps)}\]", line
        ), line
    assert lines[1].startswith("schema 0012 (known copies: after-actions of messages that")
    assert re.fullmatch(
        rf"database migrated to schema {migrate.SCHEMA_HEAD} in \d+\.\d s", lines[-1]
    )
    assert [r.getMessage() for r in caplog.records if r.name == "store.migrate"] == lines
    # From nothing (deskq init): no word.
    with db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    lines.clear()
    assert migrate.upgrade(db.engine, lines.append) is True
    assert lines == []
    db.close()


def _one_ticket_at(db_url: str, revision: str) -> tuple[Database, int]:
    """A database with one ticket and no message, migrated down to ``revision``."""
    from alembic import command

    db = Database.open(db_url)
    _setup(db)
    tid = _new_ticket(db)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM messages"))
        command.downgrade(migrate.alembic_config(conn), revision)
    return db, tid


def test_upgrade_turns_stored_html_into_a_flag(db_url: str) -> None:
    """Migration 0010: messages of an older database keep whether they had HTML."""
    from sqlalchemy import inspect

    db, tid = _one_ticket_at(db_url, "0009")
    with db.engine.begin() as conn:
        for body, html in (("with", "<p>with</p>"), ("without", None)):
            conn.execute(
                text(
                    "INSERT INTO messages (ticket_id, direction, from_addr, to_addrs, cc_addrs, "
                    "subject, text_body, html_body, threaded_by, created_at) VALUES "
                    "(:t, 'inbound', '', '', '', '', :body, :html, '', CURRENT_TIMESTAMP)"
                ),
                {"t": tid, "body": body, "html": html},
            )
    assert migrate.upgrade(db.engine) is True
    with db.session() as s:
        flags = dict(s.execute(select(Message.text_body, Message.has_html)).all())
    assert flags == {"with": True, "without": False}
    with db.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("messages")}
    assert "has_html" in columns and "html_body" not in columns
    db.close()


def test_a_long_note_is_split_and_a_downgrade_joins_it_again(db_url: str) -> None:
    """Migration 0014: a body past codec.TEXT_INLINE is stored in two parts (any
    writer, here a note); undone, the whole body is back in text_body, and searched."""
    from alembic import command

    db = Database.open(db_url)
    _setup(db)
    tid = _new_ticket(db)
    provider = _person(db, "alice@corp.example")
    long_text = "Steps tried so far, in order. " * 2000 + "finalstep"
    with db.write() as s:
        version = s.get_one(Ticket, tid).version
        note = services.add_note(s, tid, version, provider, long_text)
        note_id = note.id
    with db.session() as s:
        stored = s.get_one(Message, note_id)
        assert len(stored.text_body) == codec.TEXT_INLINE and stored.text_more is not None
        assert stored.full_text == long_text
        assert list(s.scalars(search_ticket_ids(s, "finalstep"))) == []
    with db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0013")
        body = conn.execute(
            text("SELECT text_body FROM messages WHERE id = :id"), {"id": note_id}
        ).scalar_one()
    assert body == long_text
    with db.session() as s:  # the search index follows the whole body again
        assert list(s.scalars(search_ticket_ids(s, "finalstep"))) == [tid]
    assert migrate.upgrade(db.engine) is True
    with db.session() as s:
        again = s.get_one(Message, note_id)
        assert (again.text_body, again.text_more, again.full_text) == (long_text, None, long_text)
    db.close()


def test_upgrade_makes_stored_addresses_readable(db_url: str) -> None:
    """Migration 0011: names stored as RFC 2047 words are decoded, lists kept apart."""
    db, tid = _one_ticket_at(db_url, "0010")
    stored = [
        ("=?utf-8?q?M=C3=BCller=2C_Jos=C3=A9?= <jose@corp.example>", "plain@corp.example"),
        ("Bob <bob@corp.example>", "=?utf-8?b?5byg5Lyf?= <a@x.example>, Zoe <z@x.example>"),
        ("=?x-unknown?q?abc?= <odd@corp.example>", "=?utf-8?q?=FF?= <bad@x.example>"),
    ]
    with db.engine.begin() as conn:
        for n, (frm, to) in enumerate(stored):
            conn.execute(
                text(
                    "INSERT INTO messages (ticket_id, direction, from_addr, to_addrs, cc_addrs, "
                    "subject, text_body, has_html, threaded_by, created_at) VALUES "
                    "(:t, 'inbound', :frm, :to, '', :n, '', false, '', CURRENT_TIMESTAMP)"
                ),
                {"t": tid, "frm": frm, "to": to, "n": str(n)},
            )
    assert migrate.upgrade(db.engine) is True
    with db.session() as s:
        rows = s.execute(select(Message.from_addr, Message.to_addrs).order_by(Message.subject))
        assert [tuple(r) for r in rows] == [
            ('"Müller, José" <jose@corp.example>', "plain@corp.example"),
            ("Bob <bob@corp.example>", "张伟 <a@x.example>, Zoe <z@x.example>"),
            # what does not decode (unknown charset, bytes not UTF-8) stays as it was
            ("=?x-unknown?q?abc?= <odd@corp.example>", "=?utf-8?q?=FF?= <bad@x.example>"),
        ]
    db.close()


@pytest.mark.postgres
def test_upgrade_names_the_fix_when_search_cannot_fold_accents(
    pg_cluster: PostgresCluster,
) -> None:
    """A role that may build the schema but not create the unaccent extension."""
    import psycopg

    tag = uuid.uuid4().hex[:8]
    name, role = f"noext_{tag}", f"builder_{tag}"
    pg_cluster.create_database(name)
    admin = pg_cluster.url(name)
    with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    try:
        with pytest.raises(DatabaseError, match="CREATE EXTENSION unaccent") as refused:
            Database.open(admin.replace("postgres@", f"{role}@", 1))
        assert "permission denied" in str(refused.value)
        with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as conn:
            # Nothing half-done: the whole upgrade was one transaction.
            assert conn.execute("SELECT to_regclass('public.tickets')").fetchone() == (None,)
            conn.execute("CREATE EXTENSION unaccent")  # the fix the message names
        db = Database.open(admin.replace("postgres@", f"{role}@", 1))
        with db.engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.SCHEMA_HEAD
        db.close()
    finally:
        pg_cluster.drop_database(name)
        with psycopg.connect(pg_cluster.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_sqlite_pragmas(sqlite_url: str) -> None:
    db = Database.open(sqlite_url)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == PAGE_SIZE == 16384
    db.close()


def test_a_database_with_other_pages_keeps_them(tmp_path: Path) -> None:
    """Databases made before PAGE_SIZE (4 KB pages) open, upgrade and work unchanged."""
    db = Database.open(empty_database_with_4k_pages(tmp_path / "old.db"))
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 4096
        assert migrate.current_revision(conn) == migrate.SCHEMA_HEAD
    with db.write() as session:
        session.add(Person(address="a@corp.example"))
    with db.session() as session:
        assert session.scalars(select(Person.address)).all() == ["a@corp.example"]
    db.close()


def test_refuses_database_from_newer_deskq(db_url: str) -> None:
    db = Database.open(db_url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.close()
    with pytest.raises(DatabaseError, match="newer deskq"):
        Database.open(db_url)


def test_refuses_foreign_database(sqlite_url: str) -> None:
    import sqlite3

    path = sqlite_url.removeprefix("sqlite:///")
    sqlite3.connect(path).execute("CREATE TABLE invoices (id INTEGER)").connection.commit()
    with pytest.raises(DatabaseError, match="belongs to something else"):
        Database.open(sqlite_url)


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError, match=r"cannot open the database .*\*\*\*"):
        Database.open("postgresql+psycopg://u:hunter2@127.0.0.1:9/x")


def test_times_are_stored_and_read_as_utc(ready: Database) -> None:
    tid = _new_ticket(ready)
    paris = timezone(timedelta(hours=1))
    with ready.write() as s:
        t = s.get(Ticket, tid)
        assert t is not None
        t.first_response_at = datetime(2026, 3, 1, 12, 0, tzinfo=paris)
    with ready.session() as s:
        t = s.get(Ticket, tid)
        assert t is not None and t.first_response_at is not None
        assert t.first_response_at == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
        assert t.first_response_at.tzinfo is not None
    with pytest.raises(Exception, match="naive"), ready.write() as s:
        t = s.get(Ticket, tid)
        assert t is not None
        t.closed_at = datetime(2026, 3, 1)
        s.flush()


def test_queues_mirror_config(ready: Database) -> None:
    with ready.session() as s:
        it = s.scalar(select(Queue).where(Queue.key == "it"))
        assert it is not None
        assert [a.address for a in it.aliases] == ["it-help@corp.example", "it@corp.example"]
    moved = CONFIG.replace('aliases = ["it@corp.example"]', "aliases = []").replace(
        'address = "hr@corp.example"', 'address = "hr@corp.example"\naliases = ["it@corp.example"]'
    )
    with ready.write() as s:
        sync_queues(s, parse_settings(moved))
    with ready.session() as s:
        hr = s.scalar(select(Queue).where(Queue.key == "hr"))
        assert hr is not None
        assert [a.address for a in hr.aliases] == ["hr@corp.example", "it@corp.example"]


def test_claim_opens_and_records_events(ready: Database) -> None:
    tid = _new_ticket(ready)
    alice = _person(ready, "alice@corp.example")
    with ready.write() as s:
        t = services.claim(s, tid, 1, alice)
        assert t.version == 2 and t.status == Status.OPEN and t.assignee_id == alice.id
    with ready.session() as s:
        kinds = s.execute(
            select(Event.kind, Event.version).where(Event.ticket_id == tid).order_by(Event.id)
        ).all()
    assert [tuple(k) for k in kinds] == [("created", 1), ("assignment", 2), ("status", 2)]


def test_stale_version_is_a_conflict_that_says_what_changed(ready: Database) -> None:
    tid = _new_ticket(ready)
    alice, carol = _person(ready, "alice@corp.example"), _person(ready, "carol@corp.example")
    with ready.write() as s:
        services.set_priority(s, tid, 1, carol, Priority.URGENT)
    with pytest.raises(services.ConflictError) as info, ready.write() as s:
        services.set_priority(s, tid, 1, alice, Priority.LOW)
    err = info.value
    assert (err.expected, err.current) == (1, 2)
    assert [(k, a) for _, k, a, _ in err.changes] == [("priority", "carol@corp.example")]
    assert "priority by carol@corp.example" in str(err)
    with ready.session() as s:
        t = s.get(Ticket, tid)
        assert t is not None and t.priority == Priority.URGENT and t.version == 2


def test_concurrent_writers_one_wins_one_conflicts(ready: Database) -> None:
    """Two providers act on the same version at the same moment: exactly one wins."""
    tid = _new_ticket(ready)
    people = [_person(ready, f"p{i}@corp.example") for i in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def act(person: Person, category: str) -> None:
        barrier.wait()
        try:
            with ready.write() as s:
                services.set_category(s, tid, 1, person, category)
            outcomes.append("ok")
        except services.ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=act, args=(p, f"cat{i}")) for i, p in enumerate(people)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes) == ["conflict", "ok"]
    with ready.session() as s:
        assert s.scalar(select(Ticket.version).where(Ticket.id == tid)) == 2


def test_claim_refuses_someone_elses_ticket(ready: Database) -> None:
    tid = _new_ticket(ready)
    alice, bob = _person(ready, "alice@corp.example"), _person(ready, "bobby@corp.example")
    with ready.write() as s:
        services.claim(s, tid, 1, alice)
    with pytest.raises(services.ActionError, match="already assigned"), ready.write() as s:
        services.claim(s, tid, 2, bob)
    with ready.write() as s:
        t = services.assign(s, tid, 2, bob, bob)
        assert t.assignee_id == bob.id


def test_status_times_and_reopen(ready: Database) -> None:
    tid = _new_ticket(ready)
    alice = _person(ready, "alice@corp.example")
    with ready.write() as s:
        t = services.set_status(s, tid, 1, alice, Status.RESOLVED)
        assert t.resolved_at is not None
    with ready.write() as s:
        t = services.set_status(s, tid, 2, alice, Status.OPEN)
        assert t.resolved_at is None
    with ready.session() as s:
        data = s.scalars(
            select(Event.data)
            .where(Event.ticket_id == tid, Event.kind == "status")
            .order_by(Event.id)
        ).all()
    assert data == [{"from": "new", "to": "resolved"}, {"from": "resolved", "to": "open"}]


def test_tags_category_note_link(ready: Database) -> None:
    a, b = _new_ticket(ready), _new_ticket(ready, "Printer jam", "tray 2")
    alice = _person(ready, "alice@corp.example")
    with ready.write() as s:
        services.set_tags(s, a, 1, alice, ["VPN", "network", "vpn"])
    with ready.write() as s:
        services.set_category(s, a, 2, alice, "Network")
    with ready.write() as s:
        note = services.add_note(s, a, 3, alice, "Checked the concentrator")
        assert note.direction == Direction.NOTE
    with ready.write() as s:
        services.link(s, a, 4, alice, b)
    with pytest.raises(services.ActionError), ready.write() as s:
        services.set_tags(s, a, 5, alice, ["two words"])
    with ready.session() as s:
        da, db_ = ticket_detail(s, a), ticket_detail(s, b)
    assert da is not None and db_ is not None
    assert da.ticket.tags == ("network", "vpn") and da.ticket.category == "Network"
    assert da.links == ((b, "related"),) and db_.links == ((a, "related"),)
    assert [m.direction for m in da.messages] == ["inbound", "note"]
    assert [e.kind for e in db_.events] == ["created", "link"]
    assert db_.ticket.version == 2


def test_merge_moves_messages_and_closes_source(ready: Database) -> None:
    a, b = _new_ticket(ready), _new_ticket(ready, "VPN again", "still down")
    alice = _person(ready, "alice@corp.example")
    with ready.write() as s:
        services.set_tags(s, a, 1, alice, ["vpn"])
    with ready.write() as s:
        target = services.merge(s, a, 2, b, 1, alice)
        assert target.id == b
    with ready.session() as s:
        src, dst = ticket_detail(s, a), ticket_detail(s, b)
    assert src is not None and dst is not None
    assert src.ticket.status == "closed" and src.ticket.merged_into == b
    assert len(src.messages) == 0 and len(dst.messages) == 2
    assert dst.ticket.tags == ("vpn",)
    assert dst.events[-1].kind == "merge" and dst.events[-1].data["from"] == a
    with pytest.raises(services.ActionError, match="merged into"), ready.write() as s:
        services.set_status(s, a, src.ticket.version, alice, Status.OPEN)


def test_events_are_append_only(ready: Database) -> None:
    tid = _new_ticket(ready)
    for stmt in ("UPDATE events SET kind = 'x'", "DELETE FROM events"):
        with pytest.raises((DBAPIError, IntegrityError)), ready.write() as s:
            s.execute(text(stmt))
    with ready.session() as s:
        assert s.scalar(select(Event.kind).where(Event.ticket_id == tid)) == "created"


def test_status_check_constraint(ready: Database) -> None:
    tid = _new_ticket(ready)
    with pytest.raises((IntegrityError, DBAPIError)), ready.write() as s:
        s.execute(text("UPDATE tickets SET status = 'bogus' WHERE id = :i"), {"i": tid})


def test_full_text_search_follows_the_transaction(ready: Database) -> None:
    a = _new_ticket(ready, "VPN is down", "the concentrator rejects my token")
    b = _new_ticket(ready, "Printer jam", "tray 2 is stuck", queue="hr")
    with ready.session() as s:
        assert [t.id for t in iter_tickets(s, search="concentrator")] == [a]
        assert [t.id for t in iter_tickets(s, search="printer TRAY")] == [b]
        assert [t.id for t in iter_tickets(s, search='jam" OR "vpn')] == []
        assert list(iter_tickets(s, search="absentword")) == []
    with ready.write() as s:
        m = s.scalar(select(Message).where(Message.ticket_id == b))
        assert m is not None
        m.text_body = "paper everywhere"
    with ready.session() as s:
        assert [t.id for t in iter_tickets(s, search="paper")] == [b]
        assert list(iter_tickets(s, search="stuck")) == []
    with pytest.raises(RuntimeError), ready.write() as s:
        s.add(Message(ticket_id=a, direction=Direction.NOTE, text_body="rolledback"))
        s.flush()
        raise RuntimeError
    with ready.session() as s:
        assert list(iter_tickets(s, search="rolledback")) == []


def test_iter_tickets_filters_and_pages(ready: Database) -> None:
    ids = [_new_ticket(ready, f"t{i}", queue="it" if i % 2 else "hr") for i in range(7)]
    alice = _person(ready, "alice@corp.example")
    with ready.write() as s:
        services.set_status(s, ids[0], 1, alice, Status.PENDING)
    with ready.session() as s:
        assert [t.id for t in iter_tickets(s, batch=2)] == ids
        assert [t.id for t in iter_tickets(s, queue="it", batch=2)] == ids[1::2]
        assert [t.id for t in iter_tickets(s, statuses=[Status.PENDING])] == [ids[0]]
        first = next(iter_tickets(s))
    assert first.requester.address == "bob@corp.example" and first.messages == 1


def test_open_workspace_syncs_me(tmp_path: object, sqlite_url: str) -> None:
    settings = parse_settings(CONFIG + f'\n[database]\nurl = "{sqlite_url}"\n')
    ws = open_workspace(settings)
    with ws.db.session() as s:
        me = s.scalar(select(Person).where(Person.address == "alice@corp.example"))
        assert me is not None and me.is_provider
    ws.close()


def test_a_populated_database_migrates_down_and_up_again(db_url: str) -> None:
    """Every migration since 0003 runs on a database with tickets in it, both ways.

    (SQLite cannot rebuild a table others refer to while foreign keys are on: a
    migration that "batch"-altered people failed on every real database, while one
    migrated from empty passed.)"""
    from alembic import command

    db = Database.open(db_url)
    with db.write() as s:
        sync_queues(s, parse_settings(CONFIG))
        queue = s.scalars(select(Queue)).first()
        assert queue is not None
        who = services.get_or_create_person(s, "emp@corp.example", "Em Ployee")
        for n in range(3):
            services.open_ticket(s, queue=queue, requester=who, subject=f"Ticket {n}")

    def counts() -> tuple[int, int, int]:
        with db.engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("people", "tickets", "events")
            )

    before = counts()
    with db.engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0003")
    with db.engine.connect() as conn:
        assert migrate.current_revision(conn) == "0003"
    assert counts() == before
    with db.engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "head")
    with db.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.SCHEMA_HEAD
    assert counts() == before
    with db.write() as s:  # the new column works
        person = s.scalars(select(Person).where(Person.address == "emp@corp.example")).one()
        person.db_role = "emp"
    db.close()
