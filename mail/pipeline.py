"""Parsing in a worker process while the caller fetches and stores.

Parsing costs about as much as storing, and a machine has more than one core: the
next batch is parsed in a worker process while the current one is written to the
database. Small batches (IDLE pushes one message at a time) are parsed in-process,
where a round trip to the worker would only add latency.
"""

from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mail.prepare import Incoming, Prepared, prepare

log = logging.getLogger(__name__)
# Below this many messages a batch is parsed in-process.
POOL_THRESHOLD = 50

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _get_pool() -> ProcessPoolExecutor | None:
    global _pool
    if os.environ.get("DESKQ_NO_PARSE_POOL"):
        return None
    with _lock:
        if _pool is None:
            # spawn, not fork: the poller runs threads, and forking a threaded
            # process can copy a held lock into the child.
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(
                max_workers=_workers(),
                mp_context=context,
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
            atexit.register(_shutdown)
        return _pool


def tune_for_bulk() -> None:
    """Ready this process for large imports: the parse worker started, fewer collections."""
    warm()
    quiet_gc()


def warm() -> None:
    """Start the parse worker now: it is ready, imports done, when the first batch comes.

    Without it the first large batch waits for the worker to start (a third of a
    second, a tenth of a 10,000-message import).
    """
    pool = _get_pool()
    if pool is None:
        return
    try:
        pool.submit(_ready)
    except (BrokenProcessPool, RuntimeError):
        _shutdown()


def _ready() -> None:
    """Nothing: the worker's first task, which makes it start."""


def quiet_gc() -> None:
    """Fewer, cheaper garbage collections for a process that ingests mail.

    Parsing and storing make many short-lived objects and few cycles: with the
    default thresholds a full collection, which walks every module and mapping
    loaded at start, ran every few batches (7 % of a 10,000-message import).
    Objects alive now are frozen out of collections; the young generation is larger.
    """
    global _gc_quiet
    if _gc_quiet:  # once per process: freezing again would keep later garbage forever
        return
    _gc_quiet = True
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


_gc_quiet = False


def _watch_parent(parent: int) -> None:
    """In a worker: exit when the parent is gone (even SIGKILLed), never linger."""
    quiet_gc()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _shutdown() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None


def _prepare_all(items: list[Incoming], max_bytes: int) -> list[Prepared]:
    return [prepare(item, max_bytes) for item in items]


def _prepare_remote(items: list[Incoming], max_bytes: int) -> list[Prepared]:
    """In the worker: the raw bytes are not sent back (the caller still has them)."""
    out = []
    for item in items:
        prepared = prepare(item, max_bytes)
        prepared.item = Incoming(raw=b"", mailbox=item.mailbox)
        out.append(prepared)
    return out


# Messages per task sent to the worker: small enough that the caller can take over
# what the worker has not begun, large enough that sending a task costs little.
PART = 100


def batch_bounds(sizes: Sequence[int], count: int, max_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges cutting ``sizes`` into consecutive batches of at most
    ``count`` emails and ``max_bytes`` bytes (an email larger than that alone).

    A batch is fetched, parsed and committed whole, and the pipeline holds about three
    at once: a count alone would let 200 emails of 20 MB (scans, photos) take gigabytes.
    """
    bounds: list[tuple[int, int]] = []
    start = total = 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= count or total + size > max_bytes):
            bounds.append((start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        bounds.append((start, len(sizes)))
    return bounds


def prepared_batches(
    batches: Iterable[list[Incoming]], max_bytes: int, first: Pending | None = None
) -> Generator[list[Prepared], None, None]:
    """The batches, prepared, in order; batch n+1 is parsed while batch n is used.
    ``first``: the first batch's preparation, submitted before (see mail.imapwire).

    A batch goes to the worker in parts of :data:`PART` messages. When the caller
    wants a batch, the parts the worker has not begun are parsed by the caller itself,
    from the end: a caller with time to spare (storing less than it takes to parse)
    shares the parsing instead of waiting for the worker.
    """
    pending: Pending | None = None
    submitted: Pending | None = None
    try:
        for index, items in enumerate(batches):
            submitted = first if index == 0 and first is not None else submit(items, max_bytes)
            if pending is not None:
                yield pending.result()
            pending, submitted = submitted, None
        if pending is not None:
            yield pending.result()
    finally:
        for left in (pending, submitted):  # stopped early: parts not begun are dropped
            if left is not None:
                left.cancel()


class Pending:
    """A batch being prepared: in parts by the worker, or (without one) in-process."""

    def __init__(self, items: list[Incoming], max_bytes: int) -> None:
        self.items, self.max_bytes = items, max_bytes
        self.parts: list[tuple[list[Incoming], Future[list[Prepared]] | None]] = []

    def result(self) -> list[Prepared]:
        parts = self.parts or [(self.items, None)]
        done: list[list[Prepared] | None] = [None] * len(parts)
        # From the end: a part the worker has not begun (cancel succeeds) is prepared
        # here. The worker takes parts in order: once one has begun, all before it have.
        for index in range(len(parts) - 1, -1, -1):
            items, future = parts[index]
            if future is not None and not future.cancel():
                break
            done[index] = _prepare_all(items, self.max_bytes)
        out: list[Prepared] = []
        for (items, future), prepared in zip(parts, done, strict=True):
            out += self._collect(items, future) if prepared is None else prepared
        return out

    def _collect(
        self, items: list[Incoming], future: Future[list[Prepared]] | None
    ) -> list[Prepared]:
        assert future is not None
        try:
            prepared = future.result()
        except BrokenProcessPool:
            if _pool is not None:
                log.warning("parse worker died; parsing in-process")
                _shutdown()
            return _prepare_all(items, self.max_bytes)
        for own, item in zip(prepared, items, strict=True):
            own.item = item
        return prepared

    def cancel(self) -> None:
        for _, future in self.parts:
            if future is not None:
                future.cancel()


def submit(items: list[Incoming], max_bytes: int) -> Pending:
    pending = Pending(items, max_bytes)
    pool = _get_pool() if len(items) >= POOL_THRESHOLD else None
    if pool is None:
        return pending
    sent = 0
    try:
        for sent in range(0, len(items), PART):
            part = items[sent : sent + PART]
            pending.parts.append((part, pool.submit(_prepare_remote, part, max_bytes)))
    except (BrokenProcessPool, RuntimeError):
        _shutdown()
        pending.parts.append((items[sent:], None))  # the rest in-process
    return pending
