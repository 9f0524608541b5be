"""Poller leases on both backends: one holder at a time, takeover, fencing, releases."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from store import leases, services
from store.db import Database
from store.leases import Lease, LeaseLost
from store.models import Person, PollerLease


def test_one_holder_at_a_time_and_a_takeover_after_expiry(db: Database) -> None:
    a, prev = leases.try_acquire(db, "it", "host-a:1:aa", ttl=0.6)
    assert a is not None and prev is None and a.generation == 1
    b, prev = leases.try_acquire(db, "it", "host-b:2:bb", ttl=0.6)
    assert b is None and prev is not None
    assert prev.holder == "host-a:1:aa" and 0 < prev.expires_in <= 0.6
    time.sleep(0.4)
    assert leases.renew(db, a)  # renewed: still a's after its first ttl
    time.sleep(0.4)
    assert leases.try_acquire(db, "it", "host-b:2:bb", ttl=0.6)[0] is None
    time.sleep(0.7)  # a stops renewing: it runs out
    b, prev = leases.try_acquire(db, "it", "host-b:2:bb", ttl=0.6)
    assert b is not None and b.generation == 2
    assert prev is not None and prev.expires_in < 0
    assert not leases.renew(db, a) and a.lost.is_set()  # a learns it at its next renewal
    assert [(h.name, h.holder) for h in leases.holders(db)] == [("it", "host-b:2:bb")]


def test_fence_rolls_back_the_write_of_a_holder_that_lost_its_lease(db: Database) -> None:
    a, _ = leases.try_acquire(db, "it", "host-a:1:aa", ttl=0.2)
    assert a is not None
    with db.write() as s:  # while a holds it, its writes go through
        leases.fence(s, a)
        services.get_or_create_person(s, "kept@corp.example", "Kept")
    time.sleep(0.3)
    b, _ = leases.try_acquire(db, "it", "host-b:2:bb", ttl=5)
    assert b is not None
    with pytest.raises(LeaseLost, match="another poller took over"), db.write() as s:
        services.get_or_create_person(s, "lost@corp.example", "Lost")
        leases.fence(s, a)
    assert a.lost.is_set()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Person)) == 1


def test_release_lets_a_standby_take_over_at_once(db: Database) -> None:
    a, _ = leases.try_acquire(db, "it", "host-a:1:aa", ttl=60)
    assert a is not None
    leases.release(db, a)
    b, prev = leases.try_acquire(db, "it", "host-b:2:bb", ttl=60)
    assert b is not None and prev is not None and prev.expires_in < 0


def test_a_dead_holder_on_this_host_is_taken_over_before_expiry(db: Database) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"here:{gone.pid}:aa"
    alive = f"here:{os.getppid()}:bb"  # the process that started the tests
    for holder, space, taken in (
        (alive, leases.PID_SPACE, False),  # alive here: wait for it
        (dead, "another-host", False),  # its pid means nothing here: expiry only
        (dead, leases.PID_SPACE, True),  # dead here: take it now
    ):
        with db.write() as s:
            s.merge(
                PollerLease(
                    name="it",
                    holder=holder,
                    generation=7,
                    pid_space=space,
                    acquired_at=0.0,
                    expires_at=4e9,  # far in the future
                )
            )
        lease, _ = leases.try_acquire(db, "it", "me:1:cc", ttl=60)
        assert (lease is not None) is taken, (holder, space)
    assert lease is not None and lease.generation == 8


def test_racing_standbys_get_one_lease(db: Database) -> None:
    got: list[Lease] = []
    barrier = threading.Barrier(6)

    def standby(n: int) -> None:
        barrier.wait()
        lease, _ = leases.try_acquire(db, "race", f"host-{n}:{n}:aa", ttl=60)
        if lease is not None:
            got.append(lease)

    threads = [threading.Thread(target=standby, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1


def test_heartbeat_keeps_a_lease_alive_and_notices_a_takeover(db: Database) -> None:
    a, _ = leases.try_acquire(db, "it", "host-a:1:aa", ttl=0.6)
    assert a is not None
    beat = leases.Heartbeat(db, ttl=0.6)
    beat.hold(a)
    beat.start()
    try:
        time.sleep(1.5)  # two and a half ttls: renewed all along
        assert leases.try_acquire(db, "it", "host-b:2:bb", ttl=0.6)[0] is None
        with db.write() as s:  # someone forces it (an operator, or a confused clock)
            row = s.get(PollerLease, "it")
            assert row is not None
            row.generation += 1
        assert a.lost.wait(2), "the heartbeat did not notice the lost lease"
    finally:
        beat.stop()


def test_a_renewal_that_lands_after_our_own_release_is_no_takeover(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The end of a pass drops and releases the lease while a renewal waits for the
    database: that renewal fails, but nobody took anything over."""
    lease, _ = leases.try_acquire(db, "it", "host-a:1:aa", ttl=60)
    assert lease is not None
    beat = leases.Heartbeat(db, ttl=60)
    beat.hold(lease)
    real = leases.renew

    def late(db_: Database, lease_: Lease) -> bool:  # the pass ends meanwhile
        beat.drop(lease_)
        leases.release(db_, lease_)
        return real(db_, lease_)

    monkeypatch.setattr(leases, "renew", late)
    with caplog.at_level("WARNING", logger="store.leases"):
        beat.beat()
    assert "taken over" not in caplog.text
    # A lease still held whose renewal fails is news.
    other, _ = leases.try_acquire(db, "hr", "host-a:1:aa", ttl=0.1)
    assert other is not None
    beat.hold(other)
    time.sleep(0.2)
    assert leases.try_acquire(db, "hr", "host-b:2:bb", ttl=60)[0] is not None
    monkeypatch.setattr(leases, "renew", real)
    with caplog.at_level("WARNING", logger="store.leases"):
        beat.beat()
    assert "mailbox hr: lease taken over by another poller" in caplog.text
