"""Connecting to an IMAP mailbox: TLS, login, the folder selected; and connections
opened early, while the poller is still starting.

Light on purpose (imapclient and the config, no database code): ``deskq poll`` opens
its mailboxes' connections in threads before it loads the database layer, so the
TLS handshake, the login and the SELECT (on a folder of new mail Dovecot answers it
only after marking every message no longer recent: 0.16 s for 10,000) happen while
the process imports and opens the database instead of after.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from store.config import MailboxSettings
from store.secrets import SecretError, resolve_password, run_secret_command

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 30.0
# An early connection not taken within this long is not used (the server may have
# dropped it meanwhile): the source connects anew.
EARLY_MAX_AGE = 30.0


class ImapError(Exception):
    """A mailbox problem worth a clear message (login refused, folder missing...)."""


@dataclass(frozen=True)
class Selected:
    """What the SELECT of a mailbox's folder said."""

    uidvalidity: int
    # Whether the server keeps keywords a client makes up (RFC 3501 "\\*").
    keywords: bool


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying TLS context (system CAs, or only ``ca_file`` when given)."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


def open_connection(m: MailboxSettings) -> IMAPClient:
    """A connection to ``m``'s server, secured and logged in, with no folder selected."""
    host, port = m.host or "localhost", m.effective_port
    if m.security == "tls":
        client = IMAPClient(
            host, port=port, ssl=True, ssl_context=tls_context(m.ca_file), timeout=CONNECT_TIMEOUT
        )
    else:
        client = IMAPClient(host, port=port, ssl=False, timeout=CONNECT_TIMEOUT)
        if m.security == "starttls":
            client.starttls(tls_context(m.ca_file))
    try:
        _login(client, m)
    except BaseException:
        close_quietly(client)
        raise
    return client


def _login(client: IMAPClient, m: MailboxSettings) -> None:
    what = f"mailbox {m.name!r}"
    try:
        if m.auth == "xoauth2":
            token = run_secret_command(m.token_command or "", f"{what} token_command")
            client.oauth2_login(m.username, token)
        else:
            password = resolve_password(m, what, m.username)
            if password is None:
                raise SecretError(f"{what}: no password source configured")
            client.login(m.username, password)
    except IMAPClientError as exc:
        raise ImapError(f"{what}: login as {m.username} refused by {m.host}: {exc}") from None


def select(client: IMAPClient, m: MailboxSettings) -> Selected:
    """Select ``m``'s folder (and make its ``move:`` target if missing)."""
    try:
        info = client.select_folder(m.folder)
    except IMAPClientError as exc:
        raise ImapError(f"mailbox {m.name!r}: cannot open folder {m.folder!r}: {exc}") from None
    selected = Selected(int(info[b"UIDVALIDITY"]), b"\\*" in info.get(b"PERMANENTFLAGS", ()))
    if m.after.startswith("move:"):
        target = m.after[5:]
        if not client.folder_exists(target):
            client.create_folder(target)
    return selected


def connect(m: MailboxSettings) -> tuple[IMAPClient, Selected, Any]:
    """Connect, secure, log in and select the folder: an early connection if one was
    opened for exactly these settings (see :func:`open_early`), else a new one.
    The third item is what ``after_select`` made of the early one (else None)."""
    early = _take_early(m)
    if early is not None:
        return early
    client = open_connection(m)
    try:
        return client, select(client, m), None
    except BaseException:
        close_quietly(client)
        raise


def close_quietly(client: IMAPClient) -> None:
    """Log out; a connection already dead is shut down (best effort, never raises)."""
    try:
        client.logout()
    except (IMAPClientError, OSError):
        try:
            client.shutdown()
        except (IMAPClientError, OSError):
            log.debug("closing a dead IMAP connection failed", exc_info=True)


# ---------------------------------------------------------------- early connections

# An early connection: the client, its SELECT, what after_select made (or None, when
# after_select failed and the connection was closed).
Early = tuple[IMAPClient, Selected, Any] | None
AfterSelect = Callable[[MailboxSettings, IMAPClient, Selected], Any]

_lock = threading.Lock()
# mailbox settings -> (when opened, the connection being opened)
_early: dict[MailboxSettings, tuple[float, Future[Early]]] = {}


def open_early(
    mailboxes: Iterable[MailboxSettings], after_select: AfterSelect | None = None
) -> None:
    """Start connecting to each IMAP mailbox now, each in a thread of its own.

    The first :func:`connect` with the same settings takes the connection, or the
    error opening it failed with (the same one, raised there). Call
    :func:`discard_early` when done, for those nothing took.

    ``after_select(m, client, selected)`` then runs in the same thread; connect()
    hands on what it returns. If it raises, the connection is closed and connect()
    opens a new one: a pass meets the trouble itself, where it is handled.
    What it returns may have a ``cancel()``, called if nothing takes it.
    """
    for m in mailboxes:
        if m.source != "imap":
            continue
        future: Future[Early] = Future()
        with _lock:
            if m in _early:
                continue
            _early[m] = (time.monotonic(), future)

        threading.Thread(
            target=_open_early,
            args=(m, future, after_select),
            name=f"connect-{m.name}",
            daemon=True,
        ).start()
        # Not taken in time (a mailbox another poller works, in a `deskq poll` that
        # runs for days): logged out then, not held until the server drops it.
        timer = threading.Timer(EARLY_MAX_AGE, _expire, args=(m, future))
        timer.daemon = True
        timer.start()


def _open_early(
    m: MailboxSettings, future: Future[Early], after_select: AfterSelect | None
) -> None:
    try:
        client = open_connection(m)
        try:
            selected = select(client, m)
        except BaseException:
            close_quietly(client)
            raise
    except Exception as exc:  # noqa: BLE001  (raised again by connect(), where it belongs)
        future.set_exception(exc)
        return
    made = None
    if after_select is not None:
        try:
            made = after_select(m, client, selected)
        except Exception:
            log.debug("mailbox %s: early start failed", m.name, exc_info=True)
            close_quietly(client)
            future.set_result(None)
            return
    future.set_result((client, selected, made))


def _take_early(m: MailboxSettings) -> tuple[IMAPClient, Selected, Any] | None:
    with _lock:
        found = _early.pop(m, None)
    if found is None:
        return None
    opened, future = found
    result = future.result()  # (its error, if opening it failed)
    if result is not None and time.monotonic() - opened > EARLY_MAX_AGE:
        _close_early(result)
        return None
    return result


def discard_early() -> None:
    """Close the early connections nothing took (now, or once they are open)."""
    with _lock:
        left = list(_early.values())
        _early.clear()
    for _, future in left:
        future.add_done_callback(_close_opened)


def _expire(m: MailboxSettings, future: Future[Early]) -> None:
    with _lock:
        if _early.get(m, (0.0, None))[1] is not future:
            return  # taken or discarded meanwhile
        del _early[m]
    future.add_done_callback(_close_opened)


def _close_opened(future: Future[Early]) -> None:
    if future.exception() is None:
        _close_early(future.result())


def _close_early(early: Early) -> None:
    if early is not None:
        client, _, made = early
        cancel = getattr(made, "cancel", None)
        if cancel is not None:
            cancel()
        close_quietly(client)
