"""Fixtures shared by the integration tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_imap_ingest import account, workspaces  # noqa: F401
from tests.smtp_server import PASSWORD, SmtpServer


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """aiosmtpd with STARTTLS and AUTH; the password is in DESKQ_TEST_SMTP_PASSWORD."""
    monkeypatch.setenv("DESKQ_TEST_SMTP_PASSWORD", PASSWORD)
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()
