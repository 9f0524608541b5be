"""Two ``deskq poll`` processes on one PostgreSQL database: one works, one stands by.

The active poller is killed with SIGKILL (its whole process group, as when its host
dies) in the middle of a 2,000-message import. The standby, on another "host" (its
own ``DESKQ_HOST_ID``, so it cannot see the dead process and must wait for the lease to
run out), takes over within 10 s and finishes: every message stored exactly once and
flagged \\Seen on the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import func, select

from store.db import Database
from store.models import Message, PollerLease, RawSource
from tests.integration.test_imap_ingest import (
    DESKQ,
    Account,
    config_toml,
    email,
    kill_group,
    wait_until,
)

pytestmark = pytest.mark.postgres

TOTAL = 2000


def start_poller(
    config: Path, env: dict[str, str], host: str, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(DESKQ), "--config", str(config), "poll"],
        env={**env, "DESKQ_HOST_ID": host}, stdout=subprocess.DEVNULL, stderr=log,
        start_new_session=True,
    )  # fmt: skip


def test_standby_takes_over_a_sigkilled_poller_and_nothing_is_lost_or_doubled(
    account: Callable[[], Account], pg_url: str, tmp_path: Path
) -> None:
    acct = account()
    acct.multiappend(
        [
            email(f"Failover {i}", message_id=f"<failover-{i}@corp.example>", body=f"req {i}\n")
            for i in range(TOTAL)
        ]
    )
    config = tmp_path / "config.toml"
    config.write_text(config_toml(pg_url, acct.mailbox_toml(after="seen"), batch_size=20))
    env = {**os.environ, acct.env: acct.password}
    env.pop("DESKQ_CONFIG", None)
    db = Database.open(pg_url, upgrade=False)

    def stored() -> int:
        with db.session() as s:
            return int(s.scalar(select(func.count()).select_from(RawSource)) or 0)

    def holder() -> str | None:
        with db.session() as s:
            row = s.get(PollerLease, "helpdesk")
            return row.holder if row is not None else None

    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("a", "b")}
    try:
        procs["a"] = start_poller(config, env, "host-a", logs["a"])
        first = wait_until(holder, 20, "the first poller to take the lease")
        procs["b"] = start_poller(config, env, "host-b", logs["b"])
        wait_until(lambda: stored() >= 300, 60, "300 messages stored")
        active = next(n for n, p in procs.items() if f":{p.pid}:" in first)
        standby = "b" if active == "a" else "a"
        kill_group(procs[active].pid)  # the host is gone: poller and its parse workers
        killed_at = time.monotonic()
        procs[active].wait()
        at_kill = stored()
        taken = wait_until(
            lambda: (h := holder()) is not None and h != first and h, 20, "the standby to take over"
        )
        takeover = time.monotonic() - killed_at
        assert f":{procs[standby].pid}:" in taken
        wait_until(lambda: stored() == TOTAL, 120, "every message stored")
        wait_until(lambda: not acct.unseen(), 60, "every message flagged \\Seen")
        procs[standby].send_signal(signal.SIGTERM)
        assert procs[standby].wait(timeout=30) == 0
    finally:
        for p in procs.values():
            kill_group(p.pid)
        for f in logs.values():
            f.close()

    print(f"failover: killed at {at_kill}/{TOTAL} stored; standby took over in {takeover:.1f} s")
    assert at_kill < TOTAL, "the kill came after the import: nothing was handed over"
    assert takeover < 10
    with db.session() as s:
        raws = s.scalar(select(func.count()).select_from(RawSource))
        inbound = s.scalar(
            select(func.count()).select_from(Message).where(Message.direction == "inbound")
        )
        distinct = s.scalar(
            select(func.count(func.distinct(Message.message_id))).where(
                Message.direction == "inbound"
            )
        )
    db.close()
    assert (raws, inbound, distinct) == (TOTAL, TOTAL, TOTAL)
    assert len(acct.seen()) == TOTAL
    standby_log = (tmp_path / f"{standby}.log").read_text()
    assert "taking over from" in standby_log and "lease ran out" in standby_log, standby_log[-2000:]
