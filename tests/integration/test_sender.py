"""The sender against a real SMTP server (aiosmtpd with STARTTLS and AUTH) and real commands."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mail import compose, sender
from mail.parse import parse
from store import outbox, services
from store.config import parse_settings
from store.db import Database
from store.models import Event, OutboxItem, OutboxState, Queue, Ticket, utcnow
from store.workspace import sync_queues
from tests.smtp_server import PASSWORD, SmtpServer

pytest.importorskip("aiosmtpd", reason="pip install aiosmtpd (in the dev extra) to run these")

QUEUE = '[[queue]]\nkey = "it"\nname = "IT Help"\ntag = "IT"\naddress = "it-help@corp.example"\n'


def settings_for(server: SmtpServer, **changes: str):  # type: ignore[no-untyped-def]
    text = server.sending_toml()
    for key, value in changes.items():
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
        text = "\n".join(lines) + (f"\n{key} = {value}\n" if value else "\n")
    return parse_settings(QUEUE + text).sending


def enqueue_reply(
    s: Session,
    queue: Queue,
    t: Ticket,
    subject: str,
    body: str,
    kind: str = "reply",
    from_name: str = "IT Help",
    to: tuple[tuple[str, str], ...] = (("Em Ployee", "emp@corp.example"),),
) -> OutboxItem:
    """One reply (to Em Ployee) on ticket ``t``, queued in the outbox as the reply path does."""
    mid = compose.new_message_id(queue.address, t.id)
    mail = compose.build(
        from_name=from_name,
        from_addr=queue.address,
        to=list(to),
        subject=compose.tagged_subject(subject, queue.tag, t.id),
        body=body,
        ticket_id=t.id,
        message_id=mid,
        date=utcnow(),
    )
    return outbox.enqueue(
        s,
        ticket_id=t.id,
        message_row_id=None,
        message_id=mid,
        mail_from=queue.address,
        recipients=[address for _, address in to],
        raw=mail.as_bytes(),
        kind=kind,
    )


def queue_one(
    db: Database,
    kind: str = "reply",
    to: tuple[tuple[str, str], ...] = (("Em Ployee", "emp@corp.example"),),
) -> tuple[int, int, str]:
    """A ticket with one queued reply: (ticket id, outbox id, Message-ID)."""
    with db.write() as s:
        sync_queues(s, parse_settings(QUEUE))
        queue = s.scalars(select(Queue)).one()
        emp = services.get_or_create_person(s, to[0][1], to[0][0])
        t = services.open_ticket(s, queue=queue, requester=emp, subject="VPN down")
        item = enqueue_reply(
            s,
            queue,
            t,
            "Re: VPN down",
            "Please restart the client.\n",
            kind,
            "Alice via IT Help",
            to,
        )
        mid = item.message_id
        return t.id, item.id, mid


def row(db: Database, outbox_id: int) -> OutboxItem:
    with db.session() as s:
        item = s.get_one(OutboxItem, outbox_id)
        s.expunge(item)
        return item


def ticket(db: Database, ticket_id: int) -> Ticket:
    with db.session() as s:
        t = s.get_one(Ticket, ticket_id)
        s.expunge(t)
        return t


def kinds(db: Database, ticket_id: int) -> list[str]:
    with db.session() as s:
        return list(
            s.scalars(select(Event.kind).where(Event.ticket_id == ticket_id).order_by(Event.id))
        )


def test_delivers_over_starttls_with_auth_and_records_the_first_response(
    db: Database, smtp: SmtpServer
) -> None:
    tid, oid, mid = queue_one(db)
    assert ticket(db, tid).first_response_at is None  # queued is not answered
    report = sender.send_due(db, sender.make_transport(settings_for(smtp)))
    assert report.sent == [oid]
    (got,) = smtp.received
    assert got.message["Message-ID"] == mid and got.rcpt_tos == ["emp@corp.example"]
    item = row(db, oid)
    assert item.state == OutboxState.SENT and item.sent_at is not None and item.attempts == 1
    assert ticket(db, tid).first_response_at == item.sent_at
    assert kinds(db, tid)[-1] == "sent"
    assert sender.send_due(db, sender.make_transport(settings_for(smtp))).sent == []  # once


def test_an_automatic_reply_is_not_a_first_response(db: Database, smtp: SmtpServer) -> None:
    tid, _, _ = queue_one(db, kind="auto-ack")
    sender.send_due(db, sender.make_transport(settings_for(smtp)))
    assert len(smtp.received) == 1 and ticket(db, tid).first_response_at is None


def test_server_down_then_up_delivers_exactly_once(db: Database, smtp: SmtpServer) -> None:
    tid, oid, mid = queue_one(db)
    smtp.stop()
    report = sender.send_due(db, sender.make_transport(settings_for(smtp)))
    assert report.retrying == [oid]
    item = row(db, oid)
    assert item.state == OutboxState.QUEUED and item.next_attempt_at > utcnow()
    assert "Connection" in item.last_error or "refused" in item.last_error.lower()
    assert sender.claim(db) == []  # not due yet: backoff
    smtp.start()
    later = utcnow() + timedelta(minutes=5)
    claimed = sender.claim(db, now=later)
    assert [c.id for c in claimed] == [oid]
    transport = sender.make_transport(settings_for(smtp))
    transport.send(claimed[0].mail_from, claimed[0].recipients, claimed[0].raw)
    sender.mark_sent(db, claimed[0])
    assert [r.message["Message-ID"] for r in smtp.received] == [mid]
    assert row(db, oid).state == OutboxState.SENT and ticket(db, tid).first_response_at


def test_permanent_refusal_is_a_visible_failure_and_can_be_retried(
    db: Database, smtp: SmtpServer
) -> None:
    tid, oid, _ = queue_one(db)
    smtp.fail_next(550, "5.7.1 Relaying denied")
    report = sender.send_due(db, sender.make_transport(settings_for(smtp)))
    assert report.failed == [oid]
    item = row(db, oid)
    assert item.state == OutboxState.FAILED and "550" in item.last_error and item.raw
    assert kinds(db, tid)[-1] == "send-failed"
    assert ticket(db, tid).first_response_at is None
    sender.retry(db, oid)
    assert sender.send_due(db, sender.make_transport(settings_for(smtp))).sent == [oid]
    assert len(smtp.received) == 1


JOSE = ("José Núñez", "josé@corp.example")  # a non-ASCII local part (RFC 6531/6532)
IDN = ("Ann", "ann@exämple.com")  # an internationalised domain only


def test_an_internationalised_address_goes_through_smtputf8(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESKQ_TEST_SMTP_PASSWORD", PASSWORD)
    server = SmtpServer(tmp_path, smtputf8=True).start()
    try:
        tid, oid, mid = queue_one(db, to=(JOSE, IDN))
        assert sender.send_due(db, sender.make_transport(settings_for(server))).sent == [oid]
        (got,) = server.received
    finally:
        server.stop()
    # The domain in its ASCII form, the local part as it is (it has no other form).
    assert got.rcpt_tos == ["josé@corp.example", "ann@xn--exmple-cua.com"]
    assert "To: José Núñez <josé@corp.example>, Ann <ann@xn--exmple-cua.com>".encode() in got.data
    back = parse(got.data)  # what the employee's mail client reads, by deskq's own parser
    assert back.to == (JOSE, ("Ann", "ann@xn--exmple-cua.com"))
    assert back.message_id == mid and back.text.strip() == "Please restart the client."
    assert ticket(db, tid).first_response_at is not None


def test_a_server_without_smtputf8_fails_such_a_reply_visibly(
    db: Database, smtp: SmtpServer
) -> None:
    tid, oid, _ = queue_one(db, to=(JOSE,))
    report = sender.send_due(db, sender.make_transport(settings_for(smtp)))
    assert report.failed == [oid] and smtp.received == []  # never retried: nothing would change
    item = row(db, oid)
    assert item.state == OutboxState.FAILED and item.raw
    assert "does not offer SMTPUTF8" in item.last_error and "josé@corp.example" in item.last_error
    assert kinds(db, tid)[-1] == "send-failed"


def test_an_internationalised_domain_alone_needs_no_smtputf8(
    db: Database, smtp: SmtpServer
) -> None:
    _, oid, _ = queue_one(db, to=(IDN,))
    assert sender.send_due(db, sender.make_transport(settings_for(smtp))).sent == [oid]
    (got,) = smtp.received
    assert got.rcpt_tos == ["ann@xn--exmple-cua.com"]
    assert got.data.isascii() and b"To: Ann <ann@xn--exmple-cua.com>" in got.data


def test_temporary_refusal_is_retried(db: Database, smtp: SmtpServer) -> None:
    _, oid, _ = queue_one(db)
    smtp.fail_next(451, "4.3.0 try later")
    assert sender.send_due(db, sender.make_transport(settings_for(smtp))).retrying == [oid]
    assert "451" in row(db, oid).last_error


def test_a_crash_mid_send_resends_the_same_message_after_the_lease(
    db: Database, smtp: SmtpServer
) -> None:
    _, oid, mid = queue_one(db)
    (first,) = sender.claim(db)  # ... and the sender dies before marking anything
    assert row(db, oid).state == OutboxState.SENDING
    assert sender.claim(db) == []  # another sender leaves it alone while the lease runs
    (again,) = sender.claim(db, now=utcnow() + sender.LEASE + timedelta(seconds=1))
    assert again.raw == first.raw and again.attempt == 2
    sender.mark_sent(db, first)  # the dead attempt's late word does not count
    assert row(db, oid).state == OutboxState.SENDING
    transport = sender.make_transport(settings_for(smtp))
    transport.send(again.mail_from, again.recipients, again.raw)
    sender.mark_sent(db, again)
    assert row(db, oid).state == OutboxState.SENT
    assert [r.message["Message-ID"] for r in smtp.received] == [mid]


def test_wrong_password_is_reported_and_retried(
    db: Database, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, oid, _ = queue_one(db)
    monkeypatch.setenv("DESKQ_TEST_SMTP_PASSWORD", "wrong")
    assert sender.send_due(db, sender.make_transport(settings_for(smtp))).retrying == [oid]
    assert "login refused" in row(db, oid).last_error
    assert PASSWORD not in row(db, oid).last_error and smtp.received == []


def test_an_untrusted_certificate_is_refused(db: Database, smtp: SmtpServer) -> None:
    _, oid, _ = queue_one(db)
    settings = settings_for(smtp, ca_file="")  # the system CAs do not know this server
    assert sender.send_due(db, sender.make_transport(settings)).retrying == [oid]
    assert "certificate" in row(db, oid).last_error.lower() and smtp.received == []


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-sendmail"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.parametrize(
    ("exit_code", "state"),
    [(0, OutboxState.SENT), (75, OutboxState.QUEUED), (1, OutboxState.FAILED)],
)
def test_command_transport(
    db: Database, tmp_path: Path, exit_code: int, state: OutboxState
) -> None:
    _, oid, mid = queue_one(db)
    out = tmp_path / "got.eml"
    command = _script(tmp_path, f'cat > "{out}"\necho "status {exit_code}" >&2\nexit {exit_code}\n')
    settings = parse_settings(QUEUE + f'[sending]\nmethod = "command"\ncommand = "{command} -t"\n')
    sender.send_due(db, sender.make_transport(settings.sending))
    assert row(db, oid).state == state
    assert mid.encode() in out.read_bytes()
    if exit_code:
        assert f"exited with {exit_code}" in row(db, oid).last_error


def test_command_transport_passes_non_ascii_mail_byte_for_byte(
    db: Database, tmp_path: Path
) -> None:
    """Names, subject and body beyond ASCII reach the program exactly as queued (no
    re-encoding on the way to its stdin), and read back as the same text; its stderr
    in any encoding becomes a readable error."""
    with db.write() as s:
        sync_queues(s, parse_settings(QUEUE))
        queue = s.scalars(select(Queue)).one()
        emp = services.get_or_create_person(s, "zoe@corp.example", "Zoë Ørsted")
        t = services.open_ticket(s, queue=queue, requester=emp, subject="Café Wi-Fi")
        item = enqueue_reply(
            s,
            queue,
            t,
            "Re: Café Wi-Fi — ça marche",
            "Grüße! The Wi-Fi at the café works again. 日本語も大丈夫です。\n",
            from_name="Åsa via IT Help",
            to=(("Zoë Ørsted", "zoe@corp.example"),),
        )
        oid, queued, tid = item.id, item.raw, t.id
    out = tmp_path / "got.eml"
    command = _script(tmp_path, f'cat > "{out}"\n')
    settings = parse_settings(QUEUE + f'[sending]\nmethod = "command"\ncommand = "{command} -t"\n')
    assert sender.send_due(db, sender.make_transport(settings.sending)).sent == [oid]
    assert out.read_bytes() == queued
    got = parse(out.read_bytes())
    assert got.text.startswith("Grüße! The Wi-Fi at the café works again. 日本語も大丈夫です。")
    assert got.subject == f"[IT #{tid}] Re: Café Wi-Fi — ça marche"
    assert got.from_name == "Åsa via IT Help"
    assert got.to == (("Zoë Ørsted", "zoe@corp.example"),)
    # A program complaining in Latin-1 (not UTF-8): the error is still readable text.
    _, failing, _ = queue_one(db)
    latin = _script(tmp_path, "cat > /dev/null\nprintf 'Empf\\344nger unbekannt\\n' >&2\nexit 1\n")
    settings = parse_settings(QUEUE + f'[sending]\nmethod = "command"\ncommand = "{latin}"\n')
    sender.send_due(db, sender.make_transport(settings.sending))
    assert row(db, failing).state == OutboxState.FAILED
    assert row(db, failing).last_error.endswith("exited with 1: Empf\ufffdnger unbekannt")


def test_folder_transport_writes_eml_files(db: Database, tmp_path: Path) -> None:
    _, oid, mid = queue_one(db)
    settings = parse_settings(
        QUEUE + f'[sending]\nmethod = "folder"\nfolder = "{tmp_path / "out"}"\n'
    )
    assert sender.send_due(db, sender.make_transport(settings.sending)).sent == [oid]
    (eml,) = (tmp_path / "out").glob("*.eml")
    assert mid.encode() in eml.read_bytes()
