"""Self-check of tests/servers.py: real round trips against real servers."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tests.servers import (
    Dovecot,
    PostgresCluster,
    dovecot_unavailable_reason,
    postgres_unavailable_reason,
)

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.mark.postgres
def test_postgres_cluster(tmp_path: Path) -> None:
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    import psycopg

    with PostgresCluster.start(tmp_path) as pg:
        pg.create_database("deskq_a")
        pg.create_database("deskq_b", template="deskq_a")
        url = pg.url("deskq_b")
        assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        conninfo = url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            # drop_database must work even with a session still open
            pg.drop_database("deskq_b")
        pg.drop_database("deskq_a")
        directory = pg.directory
    assert not directory.exists()


def _round_trip(dovecot: Dovecot, user: str, password: str, tls: bool) -> None:
    from imapclient import IMAPClient

    if tls:
        context = ssl.create_default_context(cafile=str(dovecot.ca_file))
        client = IMAPClient(dovecot.host, port=dovecot.imaps_port, ssl_context=context)
    else:
        client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False)
    with client:
        client.login(user, password)
        assert "Sent" in [name for _flags, _sep, name in client.list_folders()]
        client.append("INBOX", MESSAGE)
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", "hello"])
        fetched = client.fetch(uids[-1:], ["BODY.PEEK[]"])
        assert fetched[uids[-1]][b"BODY[]"] == MESSAGE


@pytest.mark.dovecot
def test_dovecot(tmp_path: Path) -> None:
    reason = dovecot_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from imapclient import IMAPClient
    from imapclient.exceptions import LoginError

    with Dovecot.start(tmp_path, users=3) as dovecot:
        user, password = dovecot.take_user()
        assert (user, password) == ("user01", "secret")
        assert dovecot.take_user()[0] == "user02"
        _round_trip(dovecot, user, password, tls=False)
        _round_trip(dovecot, user, password, tls=True)
        assert len(list((dovecot.maildir(user) / "cur").iterdir())) == 2

        client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False)
        with client, pytest.raises(LoginError):
            client.login(user, "wrong")

        dovecot.kill()
        # refused, or reset by a listener that is still going away
        with pytest.raises((ConnectionRefusedError, ConnectionResetError)):
            IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False)
        dovecot.restart()
        _round_trip(dovecot, user, password, tls=True)
        assert len(list((dovecot.maildir(user) / "cur").iterdir())) == 3
        dovecot.take_user()
        with pytest.raises(RuntimeError, match="exhausted"):
            dovecot.take_user()
