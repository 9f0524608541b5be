"""The minimal FETCH response reader: UID and INTERNALDATE wherever the server puts them."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from mail.imap import ImapSource, _internaldate
from store.config import parse_settings

CONFIG = (
    '[[mailbox]]\nname = "m"\nhost = "localhost"\nsecurity = "none"\nusername = "u"\n'
    'password_env = "P"\n'
    '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'
)


def _source(data: list[Any]) -> tuple[ImapSource, Any]:
    settings = parse_settings(CONFIG)
    source = ImapSource(settings.mailbox[0], settings, ingestor=None)  # type: ignore[arg-type]
    source.uidvalidity = 7
    client = SimpleNamespace(_imap=SimpleNamespace(uid=lambda *a: ("OK", data)))
    return source, client


def test_uid_before_or_after_the_body_and_missing_messages() -> None:
    data = [
        (b'1 (UID 5 INTERNALDATE "24-Nov-2026 09:15:02 +0100" BODY[] {3}', b"one"),
        b")",
        (b'2 (INTERNALDATE "24-Nov-2026 10:00:00 +0000" BODY[] {3}', b"two"),
        b" UID 6)",
        b"3 (FLAGS (\\\\Seen))",  # an unsolicited update in between
        (b"4 (BODY[] {5}", b"three"),
        b' UID 8 INTERNALDATE "01-Jan-2026 00:00:00 -0500")',
    ]
    source, client = _source(data)
    items = source._fetch(client, [5, 6, 7, 8])
    assert [(i.uid, i.raw) for i in items] == [(5, b"one"), (6, b"two"), (8, b"three")]
    assert items[0].received_at == datetime(2026, 11, 24, 8, 15, 2, tzinfo=UTC)
    assert items[2].received_at == datetime(2026, 1, 1, 5, 0, tzinfo=UTC)
    assert all(i.uidvalidity == 7 and i.mailbox == "m" for i in items)


def test_internaldate_parsing_does_not_depend_on_the_locale() -> None:
    assert _internaldate(b" 4-Nov-2026 09:15:02 +0100") == datetime(
        2026, 11, 4, 8, 15, 2, tzinfo=UTC
    )
    assert _internaldate(b"31-Feb-2026 00:00:00 +0000") is None
    assert _internaldate(b"garbage") is None
