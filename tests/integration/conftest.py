"""Fixtures shared by the integration tests (defined with the IMAP tests that began them)."""

from tests.integration.test_imap_ingest import account, workspaces  # noqa: F401
