"""Shared fixtures: real SQLite and PostgreSQL databases, a private Dovecot, CI strictness.

On a developer's machine, tests needing a server that is not installed are skipped
with a reason saying how to enable them. In CI (``CI=true``) or with
``DESKQ_REQUIRE_SERVERS=1`` such a skip is a failure, and so is any skip at all: CI
proves both backends and the IMAP path on every run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store.db import Database
from tests import servers

REQUIRE_SERVERS = os.environ.get("CI", "").lower() == "true" or bool(
    os.environ.get("DESKQ_REQUIRE_SERVERS")
)
TEMPLATE_DB = "deskq_template"
_counter = itertools.count(1)


def unavailable(reason: str) -> None:
    """Skip (on a workstation) or fail (in CI) a test whose server is missing."""
    if REQUIRE_SERVERS:
        pytest.fail(f"required server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


# ------------------------------------------------------------------ CI: no skips


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SKIPS] = []


_SKIPS = pytest.StashKey[list[str]]()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _CONFIG[0].stash[_SKIPS].append(report.nodeid)


_CONFIG: list[pytest.Config] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG.append(session.config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    skipped = session.config.stash.get(_SKIPS, [])
    if REQUIRE_SERVERS and skipped:
        print(f"\nCI forbids skipped tests; {len(skipped)} skipped: {', '.join(skipped[:10])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.PostgresCluster]:
    """A throwaway PostgreSQL cluster with a migrated template database."""
    reason = servers.postgres_unavailable_reason()
    if reason:
        unavailable(reason)
    cluster = servers.PostgresCluster.start(tmp_path_factory.mktemp("pg"))
    try:
        cluster.create_database(TEMPLATE_DB)
        Database.open(cluster.url(TEMPLATE_DB)).close()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def new_pg_url(pg_cluster: servers.PostgresCluster) -> Iterator[Callable[[], str]]:
    """Makes fresh, migrated PostgreSQL databases for one test, as many as it needs."""
    made: list[str] = []

    def make() -> str:
        name = f"t{os.getpid()}_{next(_counter)}"
        pg_cluster.create_database(name, template=TEMPLATE_DB)
        made.append(name)
        return pg_cluster.url(name)

    yield make
    for name in made:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_url(new_pg_url: Callable[[], str]) -> str:
    """A fresh, migrated PostgreSQL database for one test."""
    return new_pg_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'deskq.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """An opened, migrated database on each backend."""
    database = Database.open(db_url)
    yield database
    database.close()


# ------------------------------------------------------------------ Dovecot


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Dovecot]:
    """A private Dovecot (IMAP and IMAPS) for the whole session; one pool user per test."""
    reason = servers.dovecot_unavailable_reason()
    if reason:
        unavailable(reason)
    server = servers.Dovecot.start(tmp_path_factory.mktemp("dovecot"), users=80)
    try:
        yield server
    finally:
        server.close()
