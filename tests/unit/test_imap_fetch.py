"""The minimal FETCH response reader: UID and INTERNALDATE wherever the server puts them."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientAbortError

from mail.imap import ImapSource, _Line
from mail.imapconn import ImapError
from mail.imapwire import internaldate as _internaldate
from store.config import parse_settings

CONFIG = (
    '[[mailbox]]\nname = "m"\nhost = "localhost"\nsecurity = "none"\nusername = "u"\n'
    'password_env = "P"\n'
    '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'
)


class FakeImap:
    """imaplib's connection as send_fetch and read_fetch use it, replaying a server's bytes."""

    def __init__(self, response: bytes) -> None:
        self.stream = io.BytesIO(response)
        self.sent: list[bytes] = []
        self.tagged_commands: dict[bytes, object] = {}

    def _new_tag(self) -> bytes:
        self.tagged_commands[b"A1"] = None
        return b"A1"

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def _get_line(self) -> bytes:
        line = self.stream.readline()
        if not line.endswith(b"\r\n"):
            raise IMAPClientAbortError("socket error: EOF")
        return line[:-2]

    def read(self, size: int) -> bytes:
        return self.stream.read(size)


def _source(response: bytes) -> tuple[ImapSource, Any]:
    settings = parse_settings(CONFIG)
    source = ImapSource(settings.mailbox[0], settings, ingestor=None)  # type: ignore[arg-type]
    source.uidvalidity = 7
    return source, SimpleNamespace(_imap=FakeImap(response), search=lambda criteria: [])


def _fetch(source: ImapSource, client: Any, chunk: list[int]) -> list[Any]:
    fetched = source._fetch_ahead(client, [chunk], lambda: None, _Line())
    try:
        return next(fetched)
    finally:
        fetched.close()


def test_uid_before_or_after_the_body_and_missing_messages() -> None:
    response = (
        b'* 1 FETCH (UID 5 INTERNALDATE "24-Nov-2026 09:15:02 +0100" BODY[] {3}\r\none)\r\n'
        b'* 2 FETCH (INTERNALDATE "24-Nov-2026 10:00:00 +0000" BODY[] {3}\r\ntwo UID 6)\r\n'
        b"* 3 FETCH (FLAGS (\\Seen))\r\n"  # an unsolicited update in between
        b"* 9 EXISTS\r\n"  # new mail announced: the next SEARCH finds it
        b"* 4 FETCH (BODY[] {7}\r\nth}\r\nee"  # a literal that looks like a line end
        b' UID 8 INTERNALDATE "01-Jan-2026 00:00:00 -0500")\r\n'
        b"A1 OK Fetch completed.\r\n"
        b"* 10 EXISTS\r\n"  # after the end: left for the next command
    )
    source, client = _source(response)
    items = _fetch(source, client, [5, 6, 7, 8])
    assert [(i.uid, i.raw) for i in items] == [(5, b"one"), (6, b"two"), (8, b"th}\r\nee")]
    assert items[0].received_at == datetime(2026, 11, 24, 8, 15, 2, tzinfo=UTC)
    assert items[2].received_at == datetime(2026, 1, 1, 5, 0, tzinfo=UTC)
    assert all(i.uidvalidity == 7 and i.mailbox == "m" for i in items)
    assert client._imap.sent == [b"A1 UID FETCH 5,6,7,8 (UID INTERNALDATE BODY.PEEK[])\r\n"]
    assert client._imap.tagged_commands == {}
    assert client._imap.stream.read() == b"* 10 EXISTS\r\n"


LATER = b"* 10 EXISTS\r\n"  # what the server says next, for the next command


@pytest.mark.parametrize(
    ("response", "error", "left"),
    [
        (b"* 1 FETCH (UID 5 BODY[] {10}\r\nshort", IMAPClientAbortError, b""),  # cut off
        (b"* 1 FETCH (UID 5 BODY[] {3}\r\none)\r\n", IMAPClientAbortError, b""),  # no end
    ],
)
def test_a_lost_connection_fails_the_pass(
    response: bytes, error: type[Exception], left: bytes
) -> None:
    source, client = _source(response)
    with pytest.raises(error):
        _fetch(source, client, [5])
    assert client._imap.tagged_commands == {}
    # A failed answer is not read again (on a live socket that would wait forever).
    assert client._imap.stream.read() == left


@pytest.mark.parametrize("refusal", [b"A1 NO [SERVERBUG] Internal error", b"A1 BAD Error"])
def test_a_refused_batch_is_fetched_one_by_one(
    refusal: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A tagged NO or BAD is read once, and the batch's messages are asked for one at a
    time: the one the server refuses twice is left (logged, a stand-in in its place),
    the others come through."""
    response = b"\r\n".join(
        [
            refusal,  # the batch
            b"* 1 FETCH (UID 5 BODY[] {3}",  # UID 5 on its own
            b"one)",
            b"A1 OK done",
            refusal,  # UID 6, twice
            refusal,
            b"* 3 FETCH (UID 7 BODY[] {5}",
            b"three)",
            b"A1 OK done",
            LATER.rstrip(b"\r\n"),
            b"",
        ]
    )
    source, client = _source(response)
    items = _fetch(source, client, [5, 6, 7])
    assert [(i.uid, i.raw) for i in items if not i.unreadable] == [(5, b"one"), (7, b"three")]
    (stand_in,) = [i for i in items if i.unreadable]
    assert [i.uid for i in items] == [5, 6, 7]
    assert stand_in.uid == 6 and refusal.split(b" ", 1)[1].decode() in stand_in.unreadable
    assert b"Subject: Unreadable message: UID 6 in INBOX" in stand_in.raw
    assert client._imap.sent == [
        b"A1 UID FETCH 5,6,7 (UID INTERNALDATE BODY.PEEK[])\r\n",
        *(b"A1 UID FETCH %d (UID INTERNALDATE BODY.PEEK[])\r\n" % u for u in (5, 6, 6, 7)),
    ]
    assert "cannot return UID 6" in caplog.text
    assert client._imap.stream.read() == LATER


@pytest.mark.parametrize("probe_served", [False, True])
def test_refusals_with_nothing_served_after_them_are_checked_first(
    probe_served: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Throttling, or a server in trouble, refuses everything from some point on: after
    trailing refusals the server is asked again for a message it served. Refused too:
    the pass fails (nothing skipped). Served: the refused messages are the broken ones."""
    no = b"A1 NO [UNAVAILABLE] try later"
    served = [b"* 1 FETCH (UID 5 BODY[] {3}", b"one)", b"A1 OK done"]
    probe = [b"* 1 FETCH (UID 5 BODY[HEADER] {2}", b"h)", b"A1 OK done"]
    response = b"\r\n".join([no, *served, no, no, no, no, *(probe if probe_served else [no]), b""])
    source, client = _source(response)
    if not probe_served:
        with pytest.raises(ImapError, match="refuses every message now"):
            _fetch(source, client, [5, 6, 7])
        return
    items = _fetch(source, client, [5, 6, 7])
    assert [(i.uid, bool(i.unreadable)) for i in items] == [(5, False), (6, True), (7, True)]
    assert "cannot return UID 6" in caplog.text and "cannot return UID 7" in caplog.text
    assert client._imap.sent[-1] == b"A1 UID FETCH 5 (UID BODY.PEEK[HEADER])\r\n"


def test_internaldate_parsing_does_not_depend_on_the_locale() -> None:
    assert _internaldate(b" 4-Nov-2026 09:15:02 +0100") == datetime(
        2026, 11, 4, 8, 15, 2, tzinfo=UTC
    )
    assert _internaldate(b"31-Feb-2026 00:00:00 +0000") is None
    assert _internaldate(b"garbage") is None
    # At the edge of the range the offset overflows: no date, not a failed batch.
    assert _internaldate(b"31-Dec-9999 23:59:59 -1200") is None
    assert _internaldate(b"01-Jan-0001 00:00:00 +0100") is None
