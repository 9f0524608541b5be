"""LISTEN/NOTIFY on PostgreSQL: a commit that appends events wakes a listener at once."""

from __future__ import annotations

import threading
import time

import pytest

from store import services
from store.config import parse_settings
from store.db import Database
from store.notify import Listener
from store.workspace import sync_queues

pytestmark = pytest.mark.postgres

QUEUE = """
[[queue]]
key = "it"
name = "IT Help"
tag = "IT"
address = "it-help@corp.example"
"""


def test_a_commit_with_events_notifies_once_and_other_writes_do_not(pg_url: str) -> None:
    db = Database.open(pg_url)
    with db.write() as s:
        sync_queues(s, parse_settings(QUEUE))
    woken: list[float] = []
    nudged = threading.Event()

    def on_change() -> None:
        woken.append(time.monotonic())
        nudged.set()

    listener = Listener(db.engine.url, on_change)
    listener.start()
    try:
        assert listener.listening.wait(10), "LISTEN did not start"
        with db.write() as s:  # no event: no notification
            services.get_or_create_person(s, "quiet@corp.example")
        assert not nudged.wait(1.0)
        from sqlalchemy import select

        from store.models import Queue

        with db.write() as s:  # one transaction, several events: one notification
            queue = s.scalars(select(Queue)).one()
            who = services.get_or_create_person(s, "emp@corp.example")
            for n in range(5):
                services.open_ticket(s, queue=queue, requester=who, subject=f"Ticket {n}")
        committed = time.monotonic()
        assert nudged.wait(5), "no notification after the commit"
        time.sleep(0.5)
        assert len(woken) == 1
        assert woken[0] - committed < 1.0
    finally:
        listener.stop()
        listener.join(5)
        db.close()
    assert not listener.is_alive()
