"""The deskq data model: typed SQLAlchemy 2 tables shared by SQLite and PostgreSQL.

The schema is owned by the Alembic migrations in ``store/migrations``; a test checks
that autogenerate finds no difference between these models and the migrations.
Full-text search lives outside the models (an FTS5 table on SQLite, a generated
``tsvector`` column on PostgreSQL) because neither maps onto a portable column.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from store.codec import inflate, join_text, split_text

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind deskq stores)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite has no timezone type, so values are normalised to UTC on the way in and
    tagged as UTC on the way out; PostgreSQL stores ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: deskq stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable migration names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Status(enum.StrEnum):
    """Where a ticket stands. ``pending`` waits on the requester, ``on-hold`` on a third party."""

    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    ON_HOLD = "on-hold"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(enum.StrEnum):
    """How urgent a ticket is, lowest first."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Direction(enum.StrEnum):
    """What a message is: mail received, mail we sent, or a note only providers see."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NOTE = "note"


class OutboxState(enum.StrEnum):
    """Life of a queued outgoing email."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as the readable value ("on-hold"), checked by a named CHECK constraint,
    # never as a native PostgreSQL enum (adding a value would need a migration dance).
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Queue(Base):
    """A provider team's queue, fed by mail to its aliases (mirrored from the config)."""

    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tag: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(320))
    signature: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    aliases: Mapped[list[QueueAlias]] = relationship(
        back_populates="queue", cascade="all, delete-orphan", order_by="QueueAlias.address"
    )


class QueueAlias(Base):
    """An address whose mail lands in a queue; an address belongs to one queue only."""

    __tablename__ = "queue_aliases"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"), index=True)

    queue: Mapped[Queue] = relationship(back_populates="aliases")


class Person(Base):
    """Anyone deskq knows by address: requesters who write in, providers who answer."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    is_provider: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The PostgreSQL role this provider logs in as (row-level security maps it back).
    db_role: Mapped[str | None] = mapped_column(String(63), unique=True, index=True)


class Ticket(Base):
    """A queued request. ``version`` guards every change against concurrent edits."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_queue_id_status", "queue_id", "status"),
        Index("ix_tickets_assignee_id_status", "assignee_id", "status"),
        Index("ix_tickets_status_created_at", "status", "created_at"),
        # The queue can be sorted on these; keyset pages walk (column, id).
        Index("ix_tickets_created_at_id", "created_at", "id"),
        Index("ix_tickets_updated_at_id", "updated_at", "id"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"))
    subject: Mapped[str] = mapped_column(Text, default="")
    requester_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    status: Mapped[Status] = mapped_column(_enum(Status, "status"), default=Status.NEW)
    priority: Mapped[Priority] = mapped_column(_enum(Priority, "priority"), default=Priority.NORMAL)
    category: Mapped[str | None] = mapped_column(String(100))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)

    queue: Mapped[Queue] = relationship()
    requester: Mapped[Person] = relationship(foreign_keys=[requester_id])
    assignee: Mapped[Person | None] = relationship(foreign_keys=[assignee_id])
    tags: Mapped[list[TicketTag]] = relationship(
        cascade="all, delete-orphan", order_by="TicketTag.tag"
    )
    flags: Mapped[list[TicketFlag]] = relationship(
        cascade="all, delete-orphan", order_by="TicketFlag.flag"
    )

    # The services set the next version themselves (it is recorded on the event too);
    # SQLAlchemy still adds "WHERE version = <loaded>" to every UPDATE.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class TicketTag(Base):
    """A free-form label on a ticket."""

    __tablename__ = "ticket_tags"

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class TicketFlag(Base):
    """A condition worth a provider's eye (``parse-error``, ``quarantined``, ...) and why."""

    __tablename__ = "ticket_flags"

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    flag: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TicketLink(Base):
    """A relation between two tickets, stored once per direction so either side finds it."""

    __tablename__ = "ticket_links"

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    other_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(32), default="related")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RawSource(Base):
    """The exact bytes of a received email, compressed (store.codec), kept forever by default.

    ``identity`` (Message-ID plus a hash of delivery-independent content) makes a
    second arrival of the same email recognisable whatever route it took.
    """

    __tablename__ = "raw_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity: Mapped[str] = mapped_column(String(128), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    compression: Mapped[str] = mapped_column(String(16), default="zlib")
    data: Mapped[bytes] = mapped_column(LargeBinary)
    mailbox: Mapped[str] = mapped_column(String(200), default="")
    folder: Mapped[str] = mapped_column(String(500), default="")
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What ingestion made of it: ticket, own-mail (ours, no ticket), parse-error...
    disposition: Mapped[str] = mapped_column(String(32), default="ticket")
    # The ids of the queues the email was delivered to, space-separated, whatever
    # merges or splits did later: a copy naming another queue is delivered there once.
    # NULL for email stored before deskq kept this (its copies open nothing).
    queues: Mapped[str | None] = mapped_column(String(200))

    def content(self) -> bytes:
        """The exact bytes as received."""
        return inflate(self.compression, self.data)


class Message(Base):
    """One entry of a ticket's conversation: mail in, mail out, or an internal note."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_ticket_id_id", "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    direction: Mapped[Direction] = mapped_column(_enum(Direction, "direction"))
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    from_addr: Mapped[str] = mapped_column(Text, default="")
    to_addrs: Mapped[str] = mapped_column(Text, default="")
    cc_addrs: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[datetime | None]
    # The body's first codec.TEXT_INLINE characters (what search indexes); the rest of
    # a longer one, compressed, in text_more. ``full_text`` joins them.
    text_body: Mapped[str] = mapped_column(Text, default="")
    text_more: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Whether the email had an HTML part. The HTML itself is not copied here: it is in
    # the raw source (kept, compressed), and is often several times the size of the text.
    has_html: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    threaded_by: Mapped[str] = mapped_column(String(200), default="")
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_sources.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    attachments: Mapped[list[Attachment]] = relationship(
        cascade="all, delete-orphan", order_by="Attachment.id"
    )

    @property
    def full_text(self) -> str:
        """The whole body."""
        return join_text(self.text_body, self.text_more)


def text_columns(text: str) -> dict[str, Any]:
    """A body as a message row stores it: ``Message(..., **text_columns(body))``."""
    inline, more = split_text(text)
    return {"text_body": inline, "text_more": more}


class Blob(Base):
    """Attachment content, compressed (store.codec), stored once per SHA-256."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    compression: Mapped[str] = mapped_column(String(16), default="zlib")
    data: Mapped[bytes] = mapped_column(LargeBinary)

    def content(self) -> bytes:
        """The file's bytes."""
        return inflate(self.compression, self.data)


class Attachment(Base):
    """A file that came with (or went out with) a message; content lives in ``blobs``."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(255), default="application/octet-stream")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    """One line of a ticket's append-only history; SLA clocks are derived from these.

    ``id`` is global and increasing, so it doubles as a change cursor for live views.
    ``version`` is the ticket version the event produced, so a conflict can list
    exactly what happened since the version a provider was looking at.
    Triggers in the migration refuse UPDATE and DELETE on this table.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_ticket_id_id", "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    actor: Mapped[Person | None] = relationship()


class MailboxState(Base):
    """How far ingestion got in one folder of one mailbox."""

    __tablename__ = "mailbox_state"

    mailbox: Mapped[str] = mapped_column(String(200), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KnownCopy(Base):
    """A message in a mailbox folder that was a copy of an email stored before (it has
    no raw source of its own): its after-action is still owed if a pass was cut short."""

    __tablename__ = "known_copies"

    mailbox: Mapped[str] = mapped_column(String(200), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    raw_id: Mapped[int] = mapped_column(ForeignKey("raw_sources.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxItem(Base):
    """An outgoing email, queued in the same transaction as the reply it carries."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    # reply (a provider's) or auto-ack (automatic: never sent to loop sources).
    kind: Mapped[str] = mapped_column(String(16), default="reply")
    mail_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[str] = mapped_column(Text)
    # The main recipient, lower-cased, for the auto-acknowledgement rate limit.
    to_addr: Mapped[str] = mapped_column(String(320), default="", index=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[OutboxState] = mapped_column(
        _enum(OutboxState, "outbox_state"), default=OutboxState.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class TicketRead(Base):
    """The version of a ticket a provider last looked at: newer activity shows as unseen."""

    __tablename__ = "ticket_reads"

    person_id: Mapped[int] = mapped_column(
        ForeignKey("people.id", ondelete="CASCADE"), primary_key=True
    )
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SavedView(Base):
    """A named filter a provider saved in the queue view (its text includes sort:)."""

    __tablename__ = "saved_views"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    query: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TicketClock(Base):
    """A ticket's SLA clocks, derived from its events and kept in step with them.

    Every write that appends events updates these rows in the same transaction
    (:mod:`store.clocks`), and a changed calendar or policy rebuilds them all from the
    event log, so they are a cache of the log, never a second truth. Times are epoch
    seconds (UTC) and durations seconds, so reports and the "breaching soon" order
    can be computed in SQL over a narrow table.
    """

    __tablename__ = "ticket_clocks"
    __table_args__ = (
        Index("ix_ticket_clocks_due_ticket", "due", "ticket_id"),
        Index("ix_ticket_clocks_created", "created"),
        Index("ix_ticket_clocks_resolved", "resolved"),
    )

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[dict[str, Any]] = mapped_column()  # store.sla.Clocks, serialised
    queue_id: Mapped[int] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    assignee_id: Mapped[int | None] = mapped_column(Integer)
    category: Mapped[str | None] = mapped_column(String(100))
    created: Mapped[float] = mapped_column(Float)
    resolved: Mapped[float | None] = mapped_column(Float)  # the current resolution, if any
    first_response: Mapped[float | None] = mapped_column(Float)  # business seconds
    first_response_calendar: Mapped[float | None] = mapped_column(Float)
    resolution: Mapped[float | None] = mapped_column(Float)  # business seconds
    resolution_calendar: Mapped[float | None] = mapped_column(Float)
    first_response_target: Mapped[float | None] = mapped_column(Float)
    resolution_target: Mapped[float | None] = mapped_column(Float)
    # Epoch second each open target breaches (in the past once breached; None when it
    # has no target, has stopped, or is paused within it), and the nearer of the two.
    first_response_due: Mapped[float | None] = mapped_column(Float)
    resolution_due: Mapped[float | None] = mapped_column(Float)
    due: Mapped[float | None] = mapped_column(Float)
    waiting: Mapped[float] = mapped_column(Float, default=0.0)
    reopens: Mapped[int] = mapped_column(Integer, default=0)
    rating: Mapped[int | None] = mapped_column(Integer)


class QueueMember(Base):
    """A provider of a queue. A queue with members is seen by its members only."""

    __tablename__ = "queue_members"

    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True, index=True)
    source: Mapped[str] = mapped_column(String(16), default="command")  # or "config"
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class PollerLease(Base):
    """Which poller process works a mailbox, until when (see store.leases)."""

    __tablename__ = "poller_leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # the mailbox
    holder: Mapped[str] = mapped_column(String(300))  # host:pid:random
    generation: Mapped[int] = mapped_column(Integer)  # bumped on every change of holder
    pid_space: Mapped[str | None] = mapped_column(String(64))  # host, boot and PID namespace
    acquired_at: Mapped[float] = mapped_column(Float)  # epoch seconds, database clock
    expires_at: Mapped[float] = mapped_column(Float)


class Meta(Base):
    """Small named values deskq keeps about the database itself (e.g. the SLA fingerprint)."""

    __tablename__ = "deskq_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
