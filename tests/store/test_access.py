"""Access per queue: members, what each provider sees, views in the audit, and on
PostgreSQL the database's own row-level security for a provider's login role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import psycopg
import pytest
from sqlalchemy import func, select, text

from mail.ingest import Ingestor
from mail.prepare import Incoming, prepare
from store import access, report
from store.config import Settings, parse_settings
from store.models import Event, Person, Ticket
from store.query import parse_query
from store.workspace import Workspace, open_workspace
from tui.desk import Desk, Target

CONFIG = """
me = "{me}"
[database]
url = "{url}"

[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"

[[queue]]
key = "hr"
name = "HR"
tag = "HR"
address = "hr@corp.example"
providers = ["dave@corp.example"]

[[queue]]
key = "fac"
name = "Facilities"
tag = "FAC"
address = "facilities@corp.example"
"""


def settings(url: str, me: str = "") -> Settings:
    return parse_settings(CONFIG.format(url=url, me=me))


def mail(to: str, subject: str, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Emp {n} <emp{n}@corp.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<access-{n}-{uuid.uuid4().hex}@corp.example>"
    msg.set_content(f"Request {n}: {subject}\n")
    msg.add_attachment(f"payslip {n}".encode(), maintype="application", subtype="pdf",
                       filename=f"doc-{n}.pdf")  # fmt: skip
    return msg.as_bytes()


def ingest(ws: Workspace, *emails: bytes) -> None:
    ingestor = Ingestor(ws.settings, ws.db)
    batch = [
        prepare(Incoming(raw=raw, mailbox="m", uid=i + 1), 1 << 24) for i, raw in enumerate(emails)
    ]
    ingestor.store_batch(batch, mailbox="m", default_queue="it")


@pytest.fixture
def seeded(db_url: str) -> Iterator[Workspace]:
    """Two IT tickets, one HR ticket (HR has dave as its provider), one facilities ticket."""
    ws = open_workspace(settings(db_url))
    ingest(
        ws,
        mail("it-help@corp.example", "Printer jammed", 1),
        mail("it-help@corp.example", "VPN down", 2),
        mail("hr@corp.example", "My salary", 3),
        mail("facilities@corp.example", "Broken chair", 4),
    )
    yield ws
    ws.close()


def queues_of(ws: Workspace, ids: list[int] | None) -> set[str]:
    with ws.db.session() as s:
        from store.models import Queue

        stmt = select(Queue.key)
        if ids is not None:
            stmt = stmt.where(Queue.id.in_(ids))
        return set(s.scalars(stmt))


def desk_as(ws: Workspace, me: str) -> Desk:
    import dataclasses

    return Desk(Workspace(dataclasses.replace(ws.settings, me=me), ws.db))


def test_members_decide_who_sees_a_queue(seeded: Workspace) -> None:
    ws = seeded
    with ws.db.write() as s:
        access.add(s, "carol@corp.example", ["it"], name="Carol")
        dave = s.scalar(select(Person.id).where(Person.address == "dave@corp.example"))
        carol = s.scalar(select(Person.id).where(Person.address == "carol@corp.example"))
        erin = access.add(s, "erin@corp.example", ["fac"]).id
    with ws.db.session() as s:
        # it: carol; hr: dave (from the config); fac: erin -- no queue is open any more
        assert queues_of(ws, access.visible_queue_ids(s, carol)) == {"it"}
        assert queues_of(ws, access.visible_queue_ids(s, dave)) == {"hr"}
        assert queues_of(ws, access.visible_queue_ids(s, erin)) == {"fac"}
        assert access.visible_queue_ids(s, None) is None  # no "me": an administrator
        assert access.scope_for(s, "stranger@corp.example") == []
    with ws.db.write() as s, pytest.raises(access.AccessError, match="last provider of fac"):
        access.remove(s, "erin@corp.example")
    with ws.db.write() as s:
        assert access.remove(s, "erin@corp.example", reopen=True) == 1
    with ws.db.session() as s:  # facilities has no members again: open to all
        assert queues_of(ws, access.visible_queue_ids(s, carol)) == {"it", "fac"}
    with ws.db.write() as s, pytest.raises(access.AccessError, match="by the config"):
        access.remove(s, "dave@corp.example", ["hr"])
    with ws.db.write() as s, pytest.raises(access.AccessError, match="no queue nope"):
        access.add(s, "carol@corp.example", ["nope"])
    rows = {p.address: p for p in access.providers(ws.db.session())}
    assert rows["dave@corp.example"].queues == [("hr", "config")]
    assert rows["carol@corp.example"].role == "carol"


def test_the_config_keeps_its_members_in_step(db_url: str) -> None:
    ws = open_workspace(settings(db_url))
    with ws.db.session() as s:
        assert [(p.address, p.queues) for p in access.providers(s)] == [
            ("dave@corp.example", [("hr", "config")])
        ]
    ws.close()
    changed = CONFIG.replace(
        'providers = ["dave@corp.example"]', 'providers = ["fay@corp.example"]'
    )
    ws = open_workspace(parse_settings(changed.format(url=db_url, me="")))
    with ws.db.session() as s:
        found = {p.address: p.queues for p in access.providers(s)}
    ws.close()
    assert found["fay@corp.example"] == [("hr", "config")]
    assert found.get("dave@corp.example", []) == []  # dropped from the config: gone


def test_a_provider_sees_and_acts_on_their_queues_only(seeded: Workspace) -> None:
    ws = seeded
    carol = desk_as(ws, "carol@corp.example")  # no member anywhere: the open queues
    dave = desk_as(ws, "dave@corp.example")
    everything = parse_query("")
    assert {r.ticket.queue for r in carol.first_page(everything, 50)} == {"it", "fac"}
    assert {r.ticket.queue for r in dave.first_page(everything, 50)} == {"it", "hr", "fac"}
    assert carol.count(parse_query("salary")) == 0 and dave.count(parse_query("salary")) == 1
    with ws.db.write() as s:  # a category only HR uses is not suggested to carol
        hr_row = s.scalars(select(Ticket).where(Ticket.subject == "My salary")).one()
        hr_row.category = "payroll"
    assert "payroll" not in carol.categories() and "payroll" in dave.categories()
    with ws.db.session() as s:
        hr_ticket = s.scalar(
            select(Ticket.id).join(Ticket.queue).where(Ticket.subject == "My salary")
        )
        assert hr_ticket is not None
    assert carol.detail(hr_ticket) is None
    assert dave.detail(hr_ticket) is not None
    outcome = carol.apply("claim", [Target(hr_ticket, 1)])
    assert outcome.done == [] and "in your queues" in outcome.errors[0]
    with ws.db.session() as s:
        it_ticket = s.scalar(select(Ticket.id).where(Ticket.subject == "VPN down"))
        assert it_ticket is not None
    for action, value in (("link", hr_ticket), ("merge", Target(hr_ticket, 1))):
        outcome = carol.apply(action, [Target(it_ticket, 1)], value)
        assert outcome.done == [] and f"no ticket #{hr_ticket}" in outcome.errors[0], action
    now = datetime.now(UTC)
    with ws.db.session() as s:
        mine = report.for_settings(s, ws.settings, "all", now=now, queue_ids=carol.scope)
        assert mine.total.received == 3
        with pytest.raises(report.ReportError, match="no queue 'hr'"):
            report.for_settings(s, ws.settings, "all", now=now, queue="hr", queue_ids=carol.scope)


def test_views_are_audited_once_per_ten_minutes_and_stay_out_of_the_history(
    seeded: Workspace,
) -> None:
    ws = seeded
    dave = desk_as(ws, "dave@corp.example")
    with ws.db.session() as s:
        tid = s.scalar(select(Ticket.id).where(Ticket.subject == "My salary"))
        assert tid is not None
    for _ in range(3):
        detail = dave.detail(tid)
        assert detail is not None
        dave.mark_read(tid, detail.ticket.version)
    with ws.db.session() as s:
        views = s.execute(
            select(Event.actor_id, Event.kind).where(Event.ticket_id == tid, Event.kind == "viewed")
        ).all()
    assert views == [(dave.me_id, "viewed")]
    assert all(e.kind != "viewed" for e in detail.events)
    with ws.db.session() as s:
        last_view = s.scalar(select(func.max(Event.id)).where(Event.kind == "viewed"))
    assert last_view == dave.cursor()  # the newest event is the view...
    assert dave.changes(last_view - 1).touched == frozenset()  # ...which changes no row


# ----------------------------------------------------------------- PostgreSQL: enforced


def role_url(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


@pytest.mark.postgres
def test_row_level_security_keeps_a_provider_role_to_its_queues(pg_url: str) -> None:
    ws = open_workspace(settings(pg_url))
    ingest(
        ws,
        mail("it-help@corp.example", "Printer jammed", 1),
        mail("hr@corp.example", "My salary", 2),
        mail("hr@corp.example", "Congé parental", 3),
    )
    tag = uuid.uuid4().hex[:6]
    carol_role, dave_role = f"carol_{tag}", f"dave_{tag}"
    with ws.db.write() as s:
        access.add(s, "carol@corp.example", ["it"], role=carol_role)
        access.add(s, "dave@corp.example", ["hr"], role=dave_role)
        done = access.apply_roles(s)
    assert any(carol_role in line for line in done)

    def counts(role: str) -> dict[str, int]:
        tables = ("tickets", "messages", "events", "attachments", "raw_sources", "blobs",
                  "ticket_clocks")  # fmt: skip
        with psycopg.connect(role_url(pg_url, role).replace("+psycopg", "")) as conn:
            return {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in tables
            }

    carol, dave = counts(carol_role), counts(dave_role)
    assert carol["tickets"] == 1 and dave["tickets"] == 2
    for table in ("messages", "attachments", "raw_sources", "blobs", "ticket_clocks"):
        assert carol[table] == 1 and dave[table] == 2, table
    assert carol["events"] >= 1 and dave["events"] >= 2
    with ws.db.session() as s:  # the owner (the poller's role) sees everything
        assert s.scalar(select(func.count()).select_from(Ticket)) == 3
        hr_ticket = s.scalar(select(Ticket.id).where(Ticket.subject == "My salary"))

    # Even a hand-written write into another queue's ticket is refused by the database.
    with psycopg.connect(role_url(pg_url, carol_role).replace("+psycopg", "")) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO events (ticket_id, kind, version, data, at) "
                "VALUES (%s, 'note', 1, '{}', now())",
                (hr_ticket,),
            )
        conn.rollback()
        assert (
            conn.execute("UPDATE tickets SET subject = 'x' WHERE id = %s", (hr_ticket,)).rowcount
            == 0
        )
        conn.rollback()
        refused = (psycopg.errors.InsufficientPrivilege,)
        with ws.db.session() as s:
            it_ticket = s.scalar(select(Ticket.id).where(Ticket.subject == "Printer jammed"))
            hr_raw = s.execute(
                text("SELECT raw_id FROM messages WHERE ticket_id = :t"), {"t": hr_ticket}
            ).scalar()
        attacks = (
            # take over dave's role mapping: the policies trust people.db_role
            ("UPDATE people SET db_role = %s WHERE address = 'dave@corp.example'", (carol_role,)),
            # point a message of one's own at another queue's raw source
            ("UPDATE messages SET raw_id = %s WHERE ticket_id = %s", (hr_raw, it_ticket)),
            (
                "INSERT INTO messages (ticket_id, direction, message_id, from_addr, to_addrs, "
                "cc_addrs, subject, text_body, raw_id, created_at, threaded_by) "
                "VALUES (%s, 'inbound', '<x@y>', '', '', '', '', '', %s, now(), '')",
                (it_ticket, hr_raw),
            ),
            # link or merge into a ticket one may not see
            (
                "INSERT INTO ticket_links (ticket_id, other_id, kind, created_at) "
                "VALUES (%s, %s, 'related', now())",
                (it_ticket, hr_ticket),
            ),
            ("UPDATE tickets SET merged_into_id = %s WHERE id = %s", (hr_ticket, it_ticket)),
            ("UPDATE raw_sources SET data = 'x' WHERE id = %s", (hr_raw,)),
            ("DELETE FROM blobs", ()),
        )
        for sql, params in attacks:
            with pytest.raises(refused):
                conn.execute(sql, params)
            conn.rollback()
        # A reply's attachment may be a file only another queue has: stored, nothing shown.
        with ws.db.session() as s:
            hr_blob = s.execute(
                text(
                    "SELECT a.sha256 FROM attachments a JOIN messages m ON m.id = a.message_id "
                    "WHERE m.ticket_id = :t"
                ),
                {"t": hr_ticket},
            ).scalar()
        conn.execute(
            "INSERT INTO blobs (sha256, size, compression, data) VALUES (%s, 1, 'zlib', 'x') "
            "ON CONFLICT DO NOTHING",
            (hr_blob,),
        )
        conn.commit()
        assert (
            conn.execute("SELECT count(*) FROM blobs WHERE sha256 = %s", (hr_blob,)).fetchone()[0]
            == 0
        )

    # Called by hand, the search function shows each role only its own queues' tickets,
    # with accents folded as in deskq's own search.
    cases = [(carol_role, "salary", 0), (dave_role, "salary", 1)]
    cases += [(carol_role, "conge", 0), (dave_role, "conge", 1), (dave_role, "CONGÉ", 1)]
    for role, word, found in cases:
        with psycopg.connect(role_url(pg_url, role).replace("+psycopg", "")) as conn:
            hits = conn.execute("SELECT deskq_search(%s)", (word,)).fetchall()
        assert len(hits) == found, (role, word)

    # deskq itself, opened as the provider's role, works within those rows.
    as_carol = parse_settings(
        CONFIG.format(url=role_url(pg_url, carol_role), me="carol@corp.example")
    )
    cws = open_workspace(as_carol)
    try:
        desk = Desk(cws)
        rows = desk.first_page(parse_query(""), 50)
        assert [r.ticket.subject for r in rows] == ["Printer jammed"]
        # Search goes through deskq_search: indexed, and still only carol's queue.
        assert desk.count(parse_query("printer")) == 1
        assert desk.count(parse_query("salary")) == 0
        it_ticket = rows[0].ticket
        assert desk.apply("claim", [Target(it_ticket.id, it_ticket.version)]).done == [it_ticket.id]
        with cws.db.session() as s:
            assert s.execute(text("SELECT count(*) FROM tickets")).scalar() == 1
    finally:
        cws.close()
    ws.close()


def test_a_queue_the_config_leaves_without_providers_is_announced(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    open_workspace(settings(db_url)).close()
    unlisted = CONFIG.replace('providers = ["dave@corp.example"]', "")
    with caplog.at_level("WARNING", logger="store.access"):
        open_workspace(parse_settings(unlisted.format(url=db_url, me=""))).close()
    assert "queue hr has no providers any more" in caplog.text
