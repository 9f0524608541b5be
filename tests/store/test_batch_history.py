"""A ticket opened and answered within one batch keeps an honest history."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from mail.poller import poll_once
from store.config import parse_settings
from store.models import Event, Ticket
from store.workspace import open_workspace

REQUEST = (
    b"From: Bob <bob@corp.example>\nTo: it@corp.example\nSubject: VPN down\n"
    b"Message-ID: <a@corp.example>\n\nIt dropped.\n"
)
REPLY = (
    b"From: Bob <bob@corp.example>\nTo: it@corp.example\nSubject: Re: VPN down\n"
    b"Message-ID: <b@corp.example>\nIn-Reply-To: <a@corp.example>\n\nStill down.\n"
)


def test_request_and_reply_in_one_batch(tmp_path: Path, db_url: str) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    first, second = datetime(2026, 3, 2, 9, 0, tzinfo=UTC), datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    for name, raw, when in (("1.a", REQUEST, first), ("2.b", REPLY, second)):
        path = maildir / "new" / name
        path.write_bytes(raw)
        os.utime(path, (when.timestamp(), when.timestamp()))
    settings = parse_settings(
        f'[database]\nurl = "{db_url}"\n'
        f'[[mailbox]]\nname = "m"\nsource = "maildir"\npath = "{maildir}"\n'
        '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'
    )
    ws = open_workspace(settings)
    try:
        [status] = poll_once(ws)
        assert status.stored == 2 and not status.failures
        with ws.db.session() as session:
            [ticket] = session.scalars(select(Ticket)).all()
            events = session.execute(
                select(Event.kind, Event.version, Event.at).order_by(Event.id)
            ).all()
        assert ticket.created_at == first and ticket.updated_at == second
        assert ticket.version == 2
        assert [(k, v) for k, v, _ in events] == [("created", 1), ("message", 1), ("message", 2)]
        assert [at for _, _, at in events] == [first, first, second]
    finally:
        ws.close()
