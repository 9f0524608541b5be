"""Live refresh on PostgreSQL: LISTEN for new events instead of waiting for the next look.

Migration 0006 makes every statement that inserts events send ``NOTIFY deskq_events``
(one notification per transaction: PostgreSQL folds identical ones, and it delivers
them at commit). :class:`Listener` holds one connection of its own that LISTENs and
calls ``on_change`` (from its own thread) for each notification, so a screen can look
at the change feed within milliseconds of someone else's commit. The payload is
empty: what changed is read through the change feed, under the reader's own access
rules. The periodic look stays, as the fallback for a lost connection and for SQLite.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

CHANNEL = "deskq_events"
RETRY_SECONDS = 5.0


def connect_args(url: URL) -> dict[str, Any]:
    """psycopg's keyword arguments for SQLAlchemy's ``postgresql+psycopg`` URL.

    Keywords, not a rendered URL: a password with spaces or ``@`` in it would break a
    URL, and psycopg's complaint about it would quote the password into the log.
    """
    args: dict[str, Any] = {
        key: value
        for key, value in (
            ("host", url.host),
            ("port", url.port),
            ("user", url.username),
            ("password", url.password),
            ("dbname", url.database),
        )
        if value is not None
    }
    args.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return args


class Listener(threading.Thread):
    """LISTENs on its own connection until :meth:`stop`; reconnects after failures."""

    def __init__(self, url: URL, on_change: Callable[[], None]) -> None:
        super().__init__(name="deskq-listen", daemon=True)
        self.url, self.on_change = url, on_change
        self.stopping = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in effect

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        import psycopg

        while not self.stopping.is_set():
            try:
                args = connect_args(self.url) | {"autocommit": True, "connect_timeout": 10}
                with psycopg.connect(**args) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self.stopping.is_set():
                        # Wakes at least once a second to notice stop().
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.on_change()
            except Exception as exc:  # noqa: BLE001 - logged; the periodic look goes on
                self.listening.clear()
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if self.url.password:
                    reason = reason.replace(str(self.url.password), "***")
                log.warning("live refresh: LISTEN failed (%s); retrying", reason)
                self.stopping.wait(RETRY_SECONDS)
        self.listening.clear()
