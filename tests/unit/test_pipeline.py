"""The parse pipeline: batches come back in order, prepared as in-process, whoever parsed them."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest

from mail import pipeline
from mail.prepare import Incoming, Prepared, prepare

LIMIT = 1 << 20


def item(n: int) -> Incoming:
    raw = (
        f"From: user{n}@corp.example\r\nSubject: Request {n}\r\n"
        f"Message-ID: <{n}@corp.example>\r\n\r\nBody {n}\r\n"
    ).encode()
    return Incoming(raw=raw, mailbox="m", uid=n)


def summary(prepared: list[Prepared]) -> list[tuple[int | None, str, str, bytes]]:
    return [(p.item.uid, p.parsed.subject, p.identity, p.item.raw) for p in prepared]


def expected(items: list[Incoming]) -> list[tuple[int | None, str, str, bytes]]:
    return summary([prepare(i, LIMIT) for i in items])


def done_future(items: list[Incoming]) -> Future[list[Prepared]]:
    """What the worker hands back: prepared, without the raw bytes."""
    future: Future[list[Prepared]] = Future()
    future.set_running_or_notify_cancel()
    future.set_result(pipeline._prepare_remote(items, LIMIT))
    return future


def test_batches_through_the_worker_come_back_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESKQ_NO_PARSE_POOL", raising=False)
    batches = [[item(b * 1000 + i) for i in range(250)] for b in range(5)]
    got = [summary(p) for p in pipeline.prepared_batches(batches, LIMIT)]
    assert got == [expected(b) for b in batches]


def test_parts_the_worker_has_not_begun_are_parsed_by_the_caller() -> None:
    items = [item(i) for i in range(300)]
    pending = pipeline.Pending(items, LIMIT)
    first: Future[list[Prepared]] = Future()
    first.set_running_or_notify_cancel()  # the worker has begun it: cannot be taken back
    waiting: list[Future[list[Prepared]]] = [Future(), Future()]  # not begun
    pending.parts = [(items[:100], first), (items[100:200], waiting[0]), (items[200:], waiting[1])]
    threading.Timer(
        0.05, lambda: first.set_result(pipeline._prepare_remote(items[:100], LIMIT))
    ).start()
    assert summary(pending.result()) == expected(items)
    assert all(f.cancelled() for f in waiting)


def test_a_begun_part_stops_the_caller_from_taking_earlier_ones() -> None:
    """The worker takes parts in order: once the last has begun, every earlier one has."""
    items = [item(i) for i in range(200)]
    pending = pipeline.Pending(items, LIMIT)
    earlier: Future[list[Prepared]] = Future()  # left as if begun: it must not be cancelled
    pending.parts = [(items[:100], earlier), (items[100:], done_future(items[100:]))]
    threading.Timer(0.05, lambda: earlier.set_running_or_notify_cancel()).start()
    threading.Timer(
        0.1, lambda: earlier.set_result(pipeline._prepare_remote(items[:100], LIMIT))
    ).start()
    assert summary(pending.result()) == expected(items)
    assert not earlier.cancelled()


def test_a_dead_worker_leaves_its_parts_to_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    items = [item(i) for i in range(200)]
    pending = pipeline.Pending(items, LIMIT)
    broken: list[Future[list[Prepared]]] = []
    for _ in range(2):
        future: Future[list[Prepared]] = Future()
        future.set_running_or_notify_cancel()
        future.set_exception(BrokenProcessPool("worker killed"))
        broken.append(future)
    pending.parts = [(items[:100], broken[0]), (items[100:], broken[1])]
    with caplog.at_level(logging.WARNING):
        assert summary(pending.result()) == expected(items)


def test_stopping_early_drops_the_parts_not_begun(monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[Future[list[Prepared]]] = []

    class Pool:
        def submit(
            self, fn: object, part: list[Incoming], max_bytes: int
        ) -> Future[list[Prepared]]:
            future: Future[list[Prepared]] = Future()
            submitted.append(future)
            if len(submitted) == 1:
                future.set_running_or_notify_cancel()
                future.set_result(pipeline._prepare_remote(part, max_bytes))
            return future

    monkeypatch.setattr(pipeline, "_get_pool", lambda: Pool())
    batches = [[item(b * 1000 + i) for i in range(100)] for b in range(4)]
    gen = pipeline.prepared_batches(iter(batches), LIMIT)
    assert summary(next(gen)) == expected(batches[0])
    gen.close()
    # The batches read ahead (one part each here) were never begun: all dropped.
    assert len(submitted) == 2  # the first batch, and the next one read ahead
    assert all(f.cancelled() for f in submitted[1:])


def test_batches_are_cut_by_count_and_by_bytes() -> None:
    bounds = pipeline.batch_bounds
    assert bounds([], 3, 100) == []
    # Sizes unknown (0): by count alone.
    assert bounds([0] * 7, 3, 100) == [(0, 3), (3, 6), (6, 7)]
    # Bytes first: 40 + 40 fits, a third 40 would not.
    assert bounds([40, 40, 40, 10, 10], 10, 100) == [(0, 2), (2, 5)]
    # Exactly the limit fits; one byte more starts a new batch.
    assert bounds([50, 50, 1], 10, 100) == [(0, 2), (2, 3)]
    # An email larger than the limit goes alone, wherever it is.
    assert bounds([10, 500, 10, 10], 10, 100) == [(0, 1), (1, 2), (2, 4)]
    assert bounds([500, 500], 10, 100) == [(0, 1), (1, 2)]


def test_batch_bounds_cover_every_email_once_in_order() -> None:
    import random

    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.choice([0, 1, 30, 99, 100, 101, 250]) for _ in range(rng.randrange(30))]
        count, limit = rng.randrange(1, 6), 100
        found = pipeline.batch_bounds(sizes, count, limit)
        assert [i for start, end in found for i in range(start, end)] == list(range(len(sizes)))
        for start, end in found:
            assert 0 < end - start <= count
            assert end - start == 1 or sum(sizes[start:end]) <= limit
