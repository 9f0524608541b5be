"""A TCP relay that behaves like a network link: limited bandwidth, added latency.

On the benchmark machine Dovecot answers over loopback, where a FETCH costs almost
nothing but CPU. A mail server is usually elsewhere: this relay puts a link of a
given bandwidth and one-way latency between a client and the server, so that the
benchmark can show what overlapping transfer with storing is worth.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

CHUNK = 64 * 1024


class Link:
    """Relays 127.0.0.1:``port`` to ``upstream``; see :func:`link`."""

    def __init__(self, upstream_port: int, mbit: float, latency_ms: float) -> None:
        self.upstream_port = upstream_port
        self.rate = mbit * 1_000_000 / 8  # bytes per second
        self.latency = latency_ms / 1000
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-link", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            self._carry(reader, up_writer), self._carry(up_reader, writer), return_exceptions=True
        )

    async def _carry(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Each chunk arrives ``latency`` after it is sent, sent no faster than ``rate``."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)
        free_at = 0.0

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, at - loop.time()))
                sink.write(data)
                await sink.drain()
            sink.close()

        delivering = asyncio.ensure_future(deliver())
        try:
            while data := await source.read(CHUNK):
                free_at = max(loop.time(), free_at) + len(data) / self.rate
                await queue.put((free_at + self.latency, data))
        finally:
            await queue.put((0.0, b""))
            await delivering

    def start(self) -> Link:
        self._thread.start()
        self._ready.wait(10)
        return self

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def link(upstream_port: int, mbit: float, latency_ms: float) -> Iterator[Link]:
    """A link to ``upstream_port`` on 127.0.0.1, for the duration of the block."""
    relay = Link(upstream_port, mbit, latency_ms).start()
    try:
        yield relay
    finally:
        relay.close()
