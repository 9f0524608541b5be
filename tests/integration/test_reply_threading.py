"""Our replies thread: end to end through a real SMTP server and a real Dovecot.

A requester writes in (Dovecot, the poller), a provider replies (deskq reply, the
sender, aiosmtpd with STARTTLS and AUTH). Our reply, read back by the poller, is
recognised as ours and never opens a ticket; the requester's answer to it joins the
same ticket whether it carries only In-Reply-To or only the subject tag.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mail import reply, sender
from mail.parse import parse
from store import services
from store.workspace import Workspace
from tests.integration.test_imap_ingest import (
    Account,
    config_toml,
    detail,
    email,
    new_id,
    outcomes_of,
)
from tests.smtp_server import PASSWORD, SmtpServer

pytestmark = pytest.mark.dovecot


def test_reply_round_trip_threads_everywhere(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    smtp: SmtpServer,
) -> None:
    acct = account()
    text = 'me = "alex@corp.example"\nname = "Alex"\n' + config_toml(
        sqlite_url, acct.mailbox_toml()
    )
    ws = workspaces(text + smtp.sending_toml())
    first_id = new_id("ask")
    acct.append(email("Laptop fan is loud", message_id=first_id))
    [arrived] = outcomes_of(ws)
    [tid] = arrived.tickets

    with ws.db.write() as s:
        me = services.get_or_create_person(s, "alex@corp.example", "Alex", provider=True)
        draft = reply.compose(
            s, ws.settings, tid, me, template="need-info", variables={"question": "Which model?"}
        )
        ours = reply.queue(s, ws.settings, draft, me)
        our_id = ours.message_id
    assert sender.send_due(ws.db, sender.make_transport(ws.settings.sending)).sent
    [delivered] = smtp.received
    assert delivered.message["Message-ID"] == our_id
    assert delivered.message["In-Reply-To"] == first_id
    assert first_id in delivered.message["References"]
    assert f"[IT #{tid}]" in delivered.message["Subject"]
    assert delivered.message["From"] == f"Alex via IT Help <{ws.settings.queue[0].address}>"

    # our own reply comes back (Cc to the alias, a Sent folder being polled...): no ticket
    acct.append(delivered.data)
    [echo] = outcomes_of(ws)
    assert echo.disposition == "own-mail" and echo.tickets == ()
    mine = [m for m in detail(ws, tid).messages if m.direction == "outbound"]
    assert [m.message_id for m in mine] == [our_id]

    # the requester answers with only In-Reply-To (a client that drops References)
    acct.append(
        email("Re: Laptop fan is loud", message_id=new_id("a1"), headers=[f"In-Reply-To: {our_id}"])
    )
    [answer] = outcomes_of(ws)
    assert answer.disposition == "threaded" and answer.tickets == (tid,)

    # ... and with only the subject tag (no threading headers at all)
    acct.append(email(f"Re: [IT #{tid}] Laptop fan is loud", message_id=new_id("a2")))
    [tagged] = outcomes_of(ws)
    assert tagged.disposition == "threaded" and tagged.tickets == (tid,)
    assert len([m for m in detail(ws, tid).messages if m.direction == "inbound"]) == 3


def test_a_copy_of_each_sent_reply_lands_in_the_sent_folder(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    smtp: SmtpServer,
) -> None:
    acct = account()
    text = 'me = "alex@corp.example"\n' + config_toml(sqlite_url, acct.mailbox_toml())
    sending = smtp.sending_toml() + 'sent_mailbox = "helpdesk"\nsent_folder = "Sent"\n'
    ws = workspaces(text + sending)
    acct.append(email("Monitor flickers", message_id=new_id("ask")))
    [arrived] = outcomes_of(ws)
    [tid] = arrived.tickets
    our_id, report = reply_keeping_a_copy(ws, tid, "Swap the cable, please.")
    assert len(report.sent) == 1 and len(smtp.received) == 1
    assert acct.count("Sent") == 1 and acct.seen("Sent")
    assert our_id.encode() in kept_in_sent(acct)


def reply_keeping_a_copy(ws: Workspace, tid: int, body: str) -> tuple[str, sender.SendReport]:
    """A provider's reply on ticket ``tid``, sent, with a copy kept in the Sent folder."""
    with ws.db.write() as s:
        me = services.get_or_create_person(s, "alex@corp.example", provider=True)
        draft = reply.compose(s, ws.settings, tid, me, body=body)
        our_id = reply.queue(s, ws.settings, draft, me).message_id
    assert ws.settings.sending is not None
    report = sender.send_due(
        ws.db,
        sender.make_transport(ws.settings.sending),
        after_sent=sender.sent_copier(ws.settings, ws.db),
    )
    return our_id, report


def kept_in_sent(acct: Account) -> bytes:
    """The one email in the account's Sent folder, as stored."""
    with acct.client() as client:
        client.select_folder("Sent", readonly=True)
        [(_uid, found)] = client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).items()
    body: bytes = found[b"BODY[]"]
    return body


def test_a_reply_to_an_internationalised_address_is_kept_in_sent_as_sent(
    account: Callable[[], Account],
    workspaces: Callable[[str], Workspace],
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply with UTF-8 headers (RFC 6532) goes out over SMTPUTF8, and its copy in
    the Sent folder is the same email: the server takes the 8-bit header as it is."""
    monkeypatch.setenv("DESKQ_TEST_SMTP_PASSWORD", PASSWORD)
    server = SmtpServer(tmp_path, smtputf8=True).start()
    try:
        acct = account()
        text = 'me = "alex@corp.example"\n' + config_toml(sqlite_url, acct.mailbox_toml())
        sending = server.sending_toml() + 'sent_mailbox = "helpdesk"\nsent_folder = "Sent"\n'
        ws = workspaces(text + sending)
        acct.append(email("Drucker", sender="José Núñez <josé@corp.example>"))
        [arrived] = outcomes_of(ws)
        assert arrived.disposition == "new-ticket"
        [tid] = arrived.tickets
        our_id, report = reply_keeping_a_copy(ws, tid, "Der Drucker geht wieder.")
        assert len(report.sent) == 1
        [got] = server.received
    finally:
        server.stop()
    assert got.rcpt_tos == ["josé@corp.example"]
    assert acct.count("Sent") == 1 and acct.seen("Sent")
    kept = kept_in_sent(acct)
    assert "José Núñez <josé@corp.example>".encode() in kept
    back = parse(kept)
    assert back.message_id == our_id and back.to == (("José Núñez", "josé@corp.example"),)
    assert back.text.strip().startswith("Der Drucker geht wieder.")
