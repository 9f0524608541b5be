"""The sender: delivers the outbox, never losing a reply and never sending one twice on purpose.

An item is *claimed* in one transaction (state ``sending``, a lease until
``next_attempt_at``, one more attempt counted), delivered outside any transaction,
then marked in another: ``sent`` (the ticket's first response time is recorded now,
not when the reply was queued), back to ``queued`` with a backoff after a temporary
failure, or ``failed`` with the server's answer after a permanent one. A sender that
dies between delivery and marking leaves a lease that expires: the item is sent again
with the same bytes and the same Message-ID, so the worst case is a duplicate that
mail clients fold together, never a lost reply.
"""

from __future__ import annotations

import logging
import shlex
import smtplib
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail.compose import envelope_address
from store import services
from store.config import SendingSettings, Settings
from store.db import Database
from store.models import OutboxItem, OutboxState, Ticket, utcnow
from store.secrets import resolve_password

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)  # a claimed item is free again after this (crash recovery)
BACKOFF_FIRST, BACKOFF_MAX = timedelta(seconds=30), timedelta(hours=1)
GIVE_UP_AFTER = 40  # attempts: about two days of hourly retries after the first hours
SMTP_TIMEOUT = 60.0


class TemporaryFailure(Exception):
    """Try again later (server down, 4xx, a timeout)."""


class PermanentFailure(Exception):
    """Retrying will not help (5xx, a refused recipient, a program that rejects the mail)."""


class Transport(Protocol):
    """Something that delivers one email."""

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None: ...

    def close(self) -> None: ...


def _smtp_error(exc: smtplib.SMTPException | OSError) -> Exception:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in exc.recipients.items()
        )
        if all(500 <= c < 600 for c in codes):
            return PermanentFailure(f"recipients refused: {detail}")
        return TemporaryFailure(f"recipients refused for now: {detail}")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        message = f"{exc.smtp_code} {text}"
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return TemporaryFailure(f"login refused: {message} (check [sending] username/password)")
        return (
            PermanentFailure(message) if 500 <= exc.smtp_code < 600 else TemporaryFailure(message)
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TemporaryFailure(f"TLS certificate not trusted: {exc.verify_message}")
    return TemporaryFailure(f"{type(exc).__name__}: {exc}")


class SmtpTransport:
    """SMTP with TLS (SMTPS or STARTTLS, certificates verified) and optional AUTH."""

    def __init__(self, settings: SendingSettings, password: str | None) -> None:
        self.settings, self.password = settings, password
        self.conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file) if s.security != "none" else None
        if s.security == "tls":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host, s.effective_port, timeout=SMTP_TIMEOUT, context=context
            )
        else:
            conn = smtplib.SMTP(s.host, s.effective_port, timeout=SMTP_TIMEOUT)
            if s.security == "starttls":
                conn.starttls(context=context)
        if s.username:
            conn.login(s.username, self.password or "")
        return conn

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        mail_from = envelope_address(mail_from)
        recipients = [envelope_address(r) for r in recipients]
        options: list[str] = []
        try:
            if self.conn is None:
                self.conn = self._connect()
            wide = [a for a in (mail_from, *recipients) if not a.isascii()]
            if wide:
                # An address with a non-ASCII local part (RFC 6531): only a server
                # offering SMTPUTF8 can take it, and nothing can stand in for it.
                self.conn.ehlo_or_helo_if_needed()
                if not self.conn.has_extn("smtputf8"):
                    raise PermanentFailure(
                        f"the SMTP server {self.settings.host} does not offer SMTPUTF8, "
                        f"which the internationalised address {', '.join(wide)} needs; "
                        "send through a server that offers it, or reply to another "
                        "address of this person"
                    )
                options = ["SMTPUTF8"]
            self.conn.sendmail(mail_from, recipients, raw, mail_options=options)
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise _smtp_error(exc) from None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (smtplib.SMTPException, OSError):
                log.debug("SMTP QUIT failed", exc_info=True)
            self.conn = None


class CommandTransport:
    """A sendmail-compatible program reading the mail on stdin (``msmtp -t``, ``sendmail -t``)."""

    EX_TEMPFAIL = 75  # sysexits.h: "try again later"

    def __init__(self, command: str) -> None:
        self.argv = shlex.split(command)

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        try:
            # The configured program with its arguments, never through a shell.
            done = subprocess.run(
                self.argv, input=raw, capture_output=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired:
            raise TemporaryFailure(f"{self.argv[0]} did not finish within 120 s") from None
        except OSError as exc:
            raise PermanentFailure(f"cannot run {self.argv[0]}: {exc.strerror}") from None
        if done.returncode:
            why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            message = f"{self.argv[0]} exited with {done.returncode}: {why[-1] if why else ''}"
            if done.returncode == self.EX_TEMPFAIL:
                raise TemporaryFailure(message)
            raise PermanentFailure(message)

    def close(self) -> None:
        pass


class FolderTransport:
    """Writes each email as a ``.eml`` file into a folder (the demo's outbox)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder).expanduser()

    def send(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = utcnow().strftime("%Y%m%dT%H%M%S.%f")
            (self.folder / f"{stamp}.eml").write_bytes(raw)
        except OSError as exc:
            raise TemporaryFailure(f"cannot write into {self.folder}: {exc.strerror}") from None

    def close(self) -> None:
        pass


def make_transport(settings: SendingSettings) -> Transport:
    """The transport ``[sending]`` describes (the password is resolved now)."""
    if settings.method == "command":
        return CommandTransport(settings.command or "")
    if settings.method == "folder":
        return FolderTransport(settings.folder or "")
    password = resolve_password(settings, "[sending]", settings.username)
    return SmtpTransport(settings, password)


# --------------------------------------------------------------------------- the outbox


@dataclass(frozen=True)
class Claimed:
    """An outbox item taken for one delivery attempt."""

    id: int
    ticket_id: int | None
    kind: str
    mail_from: str
    recipients: list[str]
    raw: bytes
    attempt: int


@dataclass
class SendReport:
    """What one pass over the outbox did."""

    sent: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def backoff(attempt: int) -> timedelta:
    """30 s, 1 min, 2 min ... capped at an hour."""
    delay: timedelta = BACKOFF_FIRST * (2 ** max(attempt - 1, 0))
    return min(delay, BACKOFF_MAX)


def claim(db: Database, limit: int = 50, now: datetime | None = None) -> list[Claimed]:
    """Take due items (queued and due, or sending with an expired lease) for delivery."""
    now = now or utcnow()
    with db.write() as s:
        stmt = (
            select(OutboxItem)
            .where(
                OutboxItem.state.in_([OutboxState.QUEUED, OutboxState.SENDING]),
                OutboxItem.next_attempt_at <= now,
            )
            .order_by(OutboxItem.id)
            .limit(limit)
        )
        if not db.is_sqlite:  # several senders: each takes rows the others have not locked
            stmt = stmt.with_for_update(skip_locked=True)
        claimed = []
        for item in s.scalars(stmt):
            item.state = OutboxState.SENDING
            item.attempts += 1
            item.next_attempt_at = now + LEASE
            claimed.append(
                Claimed(
                    item.id,
                    item.ticket_id,
                    item.kind,
                    item.mail_from,
                    [r.strip() for r in item.recipients.split(",") if r.strip()],
                    item.raw,
                    item.attempts,
                )
            )
        return claimed


def _mine(s: Session, item: Claimed) -> OutboxItem | None:
    """The row, if this attempt still owns it (no one re-claimed it after our lease)."""
    row = s.get(OutboxItem, item.id)
    if row is None or row.state != OutboxState.SENDING or row.attempts != item.attempt:
        return None
    return row


def mark_sent(db: Database, item: Claimed, now: datetime | None = None) -> None:
    """Delivered: record it, and the ticket's first response if this was the first reply."""
    now = now or utcnow()
    with db.write() as s:
        row = _mine(s, item)
        if row is None:
            return
        row.state, row.sent_at, row.last_error = OutboxState.SENT, now, ""
        if item.ticket_id is not None:
            ticket = s.get(Ticket, item.ticket_id)
            if ticket is not None:
                if item.kind == "reply" and ticket.first_response_at is None:
                    ticket.first_response_at = now
                data = {"outbox": item.id, "kind": item.kind}
                services.record_event(s, ticket, "sent", None, data, at=now)


def mark_failed(db: Database, item: Claimed, error: Exception, now: datetime | None = None) -> bool:
    """A failed attempt: retried later (True) or given up for good (False)."""
    now = now or utcnow()
    permanent = isinstance(error, PermanentFailure) or item.attempt >= GIVE_UP_AFTER
    with db.write() as s:
        row = _mine(s, item)
        if row is None:
            return not permanent
        row.last_error = str(error)[:2000]
        if permanent:
            row.state = OutboxState.FAILED
            ticket = s.get(Ticket, item.ticket_id) if item.ticket_id else None
            if ticket is not None:
                services.record_event(
                    s,
                    ticket,
                    "send-failed",
                    None,
                    {"outbox": item.id, "error": row.last_error},
                    at=now,
                )
        else:
            row.state = OutboxState.QUEUED
            row.next_attempt_at = now + backoff(item.attempt)
    return not permanent


def send_due(
    db: Database,
    transport: Transport,
    limit: int = 50,
    after_sent: Callable[[Claimed], None] | None = None,
) -> SendReport:
    """One pass: claim what is due and deliver it (``after_sent``: e.g. the Sent copy)."""
    report = SendReport()
    try:
        for item in claim(db, limit):
            try:
                transport.send(item.mail_from, item.recipients, item.raw)
            except (TemporaryFailure, PermanentFailure) as exc:
                log.warning("outbox #%s: %s", item.id, exc)
                (report.retrying if mark_failed(db, item, exc) else report.failed).append(item.id)
                continue
            mark_sent(db, item)
            report.sent.append(item.id)
            if after_sent is not None:
                after_sent(item)
    finally:
        transport.close()
    return report


def retry(db: Database, outbox_id: int) -> None:
    """Put a failed (or waiting) item back in the queue, due now."""
    with db.write() as s:
        row = s.get(OutboxItem, outbox_id)
        if row is None:
            raise services.NotFoundError(f"there is no outbox item {outbox_id}")
        if row.state == OutboxState.SENT:
            raise services.ActionError(f"outbox item {outbox_id} was sent at {row.sent_at}")
        row.state, row.next_attempt_at = OutboxState.QUEUED, utcnow()


def sent_copier(settings: Settings, db: Database) -> Callable[[Claimed], None] | None:
    """The hook that keeps a copy of each sent email in IMAP, if ``[sending]`` asks for one.

    A copy that cannot be made is logged and noted on the ticket; the email itself
    was delivered, so it is not sent again.
    """
    sending = settings.sending
    if sending is None or sending.sent_mailbox is None:
        return None
    mailbox = next(m for m in settings.mailbox if m.name == sending.sent_mailbox)
    folder = sending.sent_folder

    def copy(item: Claimed) -> None:
        from mail.imap import append_copy
        from mail.imapconn import ImapError
        from store.secrets import SecretError

        try:
            append_copy(mailbox, settings, folder, item.raw)
        except (ImapError, SecretError, OSError) as exc:
            log.warning("outbox #%s: sent, but no copy in %s: %s", item.id, folder, exc)
            with db.write() as s:
                ticket = s.get(Ticket, item.ticket_id) if item.ticket_id else None
                if ticket is not None:
                    data = {"outbox": item.id, "error": str(exc)[:500]}
                    services.record_event(s, ticket, "sent-copy-failed", None, data)

    return copy


def run_sender(
    db: Database,
    make: Callable[[], Transport],
    stop: threading.Event,
    interval: float = 5.0,
    wake: threading.Event | None = None,
    after_sent: Callable[[Claimed], None] | None = None,
) -> None:
    """Deliver the outbox until ``stop`` is set (every ``interval`` s, or when woken)."""
    wake = wake or threading.Event()
    while not stop.is_set():
        try:
            send_due(db, make(), after_sent=after_sent)
        except Exception:  # the loop must survive anything: reported, retried next pass
            log.exception("sender pass failed")
        wake.wait(interval)
        wake.clear()
