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
from collections.abc import Generator, Iterable
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


def prepared_batches(
    batches: Iterable[list[Incoming]], max_bytes: int
) -> Generator[list[Prepared], None, None]:
    """The batches, prepared, in order; batch n+1 is parsed while batch n is used."""
    pending: Future[list[Prepared]] | list[Incoming] | None = None
    pending_items: list[Incoming] = []
    for items in batches:
        submitted = _submit(items, max_bytes)
        if pending is not None:
            yield _result(pending, pending_items, max_bytes)
        pending, pending_items = submitted, items
    if pending is not None:
        yield _result(pending, pending_items, max_bytes)


def _submit(items: list[Incoming], max_bytes: int) -> Future[list[Prepared]] | list[Incoming]:
    pool = _get_pool() if len(items) >= POOL_THRESHOLD else None
    if pool is None:
        return items
    try:
        return pool.submit(_prepare_remote, items, max_bytes)
    except (BrokenProcessPool, RuntimeError):
        _shutdown()
        return items


def _result(
    pending: Future[list[Prepared]] | list[Incoming], items: list[Incoming], max_bytes: int
) -> list[Prepared]:
    if isinstance(pending, list):
        return _prepare_all(pending, max_bytes)
    try:
        prepared = pending.result()
        for own, item in zip(prepared, items, strict=True):
            own.item = item
        return prepared
    except BrokenProcessPool:
        log.warning("parse worker died; parsing this batch in-process")
        _shutdown()
        return _prepare_all(items, max_bytes)
