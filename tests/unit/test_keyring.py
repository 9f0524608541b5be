"""password_keyring reads the system keyring (a file backend stands in for it here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.config import parse_settings
from store.secrets import SecretError, resolve_password

CONFIG = (
    '[[mailbox]]\nname = "helpdesk"\nhost = "imap.corp.example"\nusername = "helpdesk"\n'
    'password_keyring = "deskq-test"\n'
    '[[queue]]\nkey = "it"\nname = "IT"\ntag = "IT"\naddress = "it@corp.example"\n'
)


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    keyring = pytest.importorskip("keyring", reason="pip install 'deskq[keyring]'")
    alt = pytest.importorskip("keyrings.alt.file", reason="pip install keyrings.alt")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    backend = alt.PlaintextKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    yield keyring
    keyring.set_keyring(previous)


def test_password_from_the_keyring(file_keyring: object) -> None:
    import keyring

    mailbox = parse_settings(CONFIG).mailbox[0]
    with pytest.raises(SecretError, match="keyring set deskq-test helpdesk") as info:
        resolve_password(mailbox, "mailbox 'helpdesk'", mailbox.username)
    assert "s3cret" not in str(info.value)
    keyring.set_password("deskq-test", "helpdesk", "s3cret")
    assert resolve_password(mailbox, "mailbox 'helpdesk'", mailbox.username) == "s3cret"
