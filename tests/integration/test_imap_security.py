"""STARTTLS with verification, and plain IMAP refused to anything but localhost."""

from __future__ import annotations

from pathlib import Path

import pytest
from imapclient import IMAPClient

from mail.poller import poll_once
from store.config import ConfigError, parse_settings
from store.workspace import open_workspace
from tests.servers import Dovecot

MAIL = b"From: bob@corp.example\r\nTo: it@corp.example\r\nSubject: over STARTTLS\r\n\r\nhi\r\n"


def _config(db: Path, dovecot: Dovecot, user: str, extra: str) -> str:
    return (
        f'[database]\nurl = "sqlite:///{db}"\n'
        f'[[mailbox]]\nname = "tls"\nhost = "127.0.0.1"\nport = {dovecot.imap_port}\n'
        f'username = "{user}"\npassword_env = "STARTTLS_TEST_PASSWORD"\n{extra}\n'
        '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'
    )


def test_starttls_with_verification(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = dovecot.take_user()
    monkeypatch.setenv("STARTTLS_TEST_PASSWORD", password)
    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as client:
        client.login(user, password)
        client.append("INBOX", MAIL)
    good = _config(
        tmp_path / "a.db", dovecot, user, f'security = "starttls"\nca_file = "{dovecot.ca_file}"'
    )
    ws = open_workspace(parse_settings(good))
    try:
        [status] = poll_once(ws)
        assert (status.failures, status.stored) == (0, 1), status.last_error
    finally:
        ws.close()
    # The same server without its CA: STARTTLS must fail verification, not fall back.
    bad = _config(tmp_path / "b.db", dovecot, user, 'security = "starttls"')
    ws = open_workspace(parse_settings(bad))
    try:
        [status] = poll_once(ws)
        assert status.failures == 1 and "CERTIFICATE_VERIFY_FAILED" in status.last_error
        assert status.stored == 0
    finally:
        ws.close()


def test_plain_imap_only_to_localhost() -> None:
    text = (
        '[[mailbox]]\nname = "x"\nhost = "imap.corp.example"\nsecurity = "none"\n'
        'username = "u"\npassword_env = "P"\n'
        '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'
    )
    with pytest.raises(ConfigError, match="not localhost"):
        parse_settings(text)
    assert parse_settings(
        text.replace('security = "none"', 'security = "none"\nallow_insecure = true')
    )


def test_polling_fallback_without_idle(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With idle = false the poller polls every poll_interval and never sends IDLE."""
    import threading
    import time

    from imapclient import IMAPClient as Client

    from mail.poller import run_forever

    user, password = dovecot.take_user()
    monkeypatch.setenv("STARTTLS_TEST_PASSWORD", password)
    idles: list[int] = []
    original = Client.idle
    monkeypatch.setattr(Client, "idle", lambda self: (idles.append(1), original(self))[1])
    text = _config(
        tmp_path / "p.db", dovecot, user, 'security = "none"\nidle = false\npoll_interval = 1'
    )
    ws = open_workspace(parse_settings(text))
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(ws, stop), daemon=True)
    worker.start()
    try:
        with Client(dovecot.host, port=dovecot.imap_port, ssl=False) as client:
            client.login(user, password)
            client.append("INBOX", MAIL)
        deadline = time.monotonic() + 15
        from sqlalchemy import func, select

        from store.models import Ticket

        while True:
            with ws.db.session() as session:
                if session.scalar(select(func.count()).select_from(Ticket)):
                    break
            assert time.monotonic() < deadline, "not ingested by polling"
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(15)
        ws.close()
    assert not worker.is_alive() and idles == []
