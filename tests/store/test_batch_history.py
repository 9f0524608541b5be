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


def test_maildir_reads_mail_that_lands_in_cur(tmp_path: Path, sqlite_url: str) -> None:
    """mbsync puts mail read elsewhere straight into cur/: it is stored once, flags kept."""
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    settings = parse_settings(
        f'[database]\nurl = "{sqlite_url}"\n'
        f'[[mailbox]]\nname = "m"\nsource = "maildir"\npath = "{maildir}"\n'
        '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'
    )
    ws = open_workspace(settings)
    try:
        (maildir / "cur" / "1.old:2,FS").write_bytes(REQUEST)  # a backlog, read elsewhere
        (maildir / "new" / "2.new").write_bytes(REPLY)
        [first] = poll_once(ws)
        assert (first.stored, first.duplicates) == (2, 0)
        assert sorted(p.name for p in (maildir / "cur").iterdir()) == ["1.old:2,FS", "2.new:2,S"]
        [again] = poll_once(ws)  # nothing new; our own renames are not read again
        assert (again.stored, again.duplicates) == (0, 0)
        third = REQUEST.replace(b"<a@corp.example>", b"<c@corp.example>")
        (maildir / "cur" / "3.synced:2,S").write_bytes(third)  # mbsync, later
        [late] = poll_once(ws)
        assert (late.stored, late.duplicates) == (1, 0)
        with ws.db.session() as session:
            assert len(session.scalars(select(Ticket)).all()) == 2
    finally:
        ws.close()
