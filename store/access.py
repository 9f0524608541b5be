"""Access per queue: which providers may see which queue.

A queue with no members is open to every provider (one team, the default). A queue
with members is seen by its members only: listed, opened, searched, reported on,
changed. Members come from the config (``providers = [...]`` in a ``[[queue]]``,
``source = "config"``, kept in step at every start) and from ``deskq providers add``
(``source = "command"``).

deskq itself applies this on both backends (:func:`visible_queue_ids`). On PostgreSQL
the database enforces it too: migration 0005 puts row-level security on every table
of ticket content, keyed on the role a connection logs in as (``people.db_role``), and
:func:`apply_roles` creates those roles. A provider connecting as their own role cannot
read another queue's rows, not even with ``psql``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from store.models import Event, Person, Queue, QueueMember, Ticket, utcnow

log = logging.getLogger(__name__)

GROUP_ROLE = "deskq_provider"
# What a provider's role may change, table by table (row-level security narrows every
# one of them to the provider's queues). Everything else is read-only, and what is not
# listed for a column may not be written at all: above all people.db_role (the mapping
# the policies trust), messages.raw_id (what points at a raw source), raw_sources.
PROVIDER_GRANTS = (
    "INSERT, UPDATE ON tickets",
    "INSERT, UPDATE ON ticket_clocks",
    "INSERT, UPDATE (ticket_id, threaded_by) ON messages",
    "INSERT ON events",
    "INSERT, UPDATE, DELETE ON ticket_tags",
    "INSERT, UPDATE, DELETE ON ticket_flags",
    "INSERT, UPDATE, DELETE ON ticket_reads",
    "INSERT, DELETE ON ticket_links",
    "INSERT, UPDATE ON outbox",
    "INSERT ON attachments",
    "INSERT ON blobs",
    "INSERT (address, display_name, is_provider, created_at) ON people",
    "UPDATE (display_name, is_provider) ON people",
    "INSERT, UPDATE, DELETE ON saved_views",
)
_ROLE = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")


class AccessError(ValueError):
    """A providers command that cannot be done; the message says what to do instead."""


@dataclass
class ProviderView:
    """A provider with their queues, for ``deskq providers list``."""

    address: str
    name: str
    role: str | None
    queues: list[tuple[str, str]] = field(default_factory=list)  # (queue key, source)

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "role": self.role,
            "queues": [{"queue": q, "source": s} for q, s in self.queues],
        }


def default_role(address: str) -> str:
    """A PostgreSQL role name from an address: ``Carol.Smith@corp`` -> ``carol_smith``."""
    local = address.split("@", 1)[0].lower()
    name = re.sub(r"[^a-z0-9_]", "_", local) or "provider"
    if not re.match(r"[a-z_]", name):
        name = f"p_{name}"
    return name[:63]


def check_role(role: str) -> str:
    if not _ROLE.match(role):
        raise AccessError(
            f"--role {role!r} is not a plain PostgreSQL role name: use lower-case letters, "
            "digits and _ (at most 63), starting with a letter or _"
        )
    return role


def visible_queue_ids(session: Session, person_id: int | None) -> list[int] | None:
    """The queues ``person_id`` may see; None when they may see every queue.

    No person (``me`` unset: an administrator's view) sees every queue; on PostgreSQL
    the database still limits a provider's own role.
    """
    if person_id is None:
        return None
    restricted = set(session.scalars(select(QueueMember.queue_id).distinct()))
    if not restricted:
        return None
    mine = set(
        session.scalars(select(QueueMember.queue_id).where(QueueMember.person_id == person_id))
    )
    every = session.scalars(select(Queue.id)).all()
    return sorted(q for q in every if q not in restricted or q in mine)


def scope_for(session: Session, me: str) -> list[int] | None:
    """:func:`visible_queue_ids` of the provider with address ``me`` ('' : every queue)."""
    address = me.strip().lower()
    if not address:
        return None
    person_id = session.scalar(select(Person.id).where(Person.address == address))
    return visible_queue_ids(session, person_id if person_id is not None else -1)


def in_scope(session: Session, scope: Sequence[int] | None, ticket_id: int) -> bool:
    """Whether ticket ``ticket_id`` exists in one of the queues ``scope`` (None: any)."""
    queue_id = session.scalar(select(Ticket.queue_id).where(Ticket.id == ticket_id))
    return queue_id is not None and (scope is None or queue_id in scope)


VIEW_WINDOW = timedelta(minutes=10)


def record_view(session: Session, person_id: int, ticket_id: int) -> bool:
    """Note in the ticket's log that ``person_id`` viewed it (once per ten minutes each).

    Returns whether an event was written. Views are part of the audit (``deskq audit``),
    not of the ticket's history on screen, and do not count as changes.
    """
    now = utcnow()
    recent = session.scalar(
        select(Event.id)
        .where(
            Event.ticket_id == ticket_id,
            Event.kind == "viewed",
            Event.actor_id == person_id,
            Event.at > now - VIEW_WINDOW,
        )
        .limit(1)
    )
    version = session.scalar(select(Ticket.version).where(Ticket.id == ticket_id))
    if recent is not None or version is None:
        return False
    session.add(
        Event(
            ticket_id=ticket_id, kind="viewed", actor_id=person_id, version=version, data={}, at=now
        )
    )
    return True


def _queues(session: Session, keys: list[str]) -> list[Queue]:
    found = {q.key: q for q in session.scalars(select(Queue).where(Queue.key.in_(keys)))}
    missing = [k for k in keys if k not in found]
    if missing:
        known = ", ".join(session.scalars(select(Queue.key).order_by(Queue.key)))
        raise AccessError(f"there is no queue {', '.join(missing)}; queues are {known}")
    return [found[k] for k in keys]


def _provider(
    session: Session, address: str, name: str | None = None, role: str | None = None
) -> Person:
    address = address.strip().lower()
    if "@" not in address:
        raise AccessError(f"{address!r} is not an email address")
    person = session.scalars(select(Person).where(Person.address == address)).first()
    if person is None:
        person = Person(address=address, display_name=name or "", is_provider=True)
        session.add(person)
    person.is_provider = True
    if name:
        person.display_name = name
    if role is not None or person.db_role is None:
        wanted = check_role(role) if role is not None else default_role(address)
        taken = session.scalars(
            select(Person).where(Person.db_role == wanted, Person.address != address)
        ).first()
        if taken is not None:
            if role is not None:
                raise AccessError(
                    f"role {wanted} already belongs to {taken.address}; choose another --role"
                )
            wanted = f"{wanted[:55]}_{hashlib.sha256(address.encode()).hexdigest()[:6]}"
        person.db_role = wanted
    session.flush()
    return person


def add(
    session: Session,
    address: str,
    queue_keys: list[str],
    *,
    name: str | None = None,
    role: str | None = None,
    source: str = "command",
) -> Person:
    """Make ``address`` a provider of the queues (kept if already one)."""
    queues = _queues(session, queue_keys)
    person = _provider(session, address, name, role)
    for queue in queues:
        member = session.get(QueueMember, (queue.id, person.id))
        if member is None:
            session.add(QueueMember(queue_id=queue.id, person_id=person.id, source=source))
    session.flush()
    return person


def remove(
    session: Session, address: str, queue_keys: list[str] | None = None, *, reopen: bool = False
) -> int:
    """Take ``address`` off the queues (all of them by default); how many were removed.

    Taking the last provider off a queue opens it to every provider: only with
    ``reopen``, so that it never happens by mistake.
    """
    address = address.strip().lower()
    person = session.scalars(select(Person).where(Person.address == address)).first()
    if person is None:
        raise AccessError(f"{address} is not a provider of any queue")
    members = list(session.scalars(select(QueueMember).where(QueueMember.person_id == person.id)))
    if queue_keys:
        ids = {q.id for q in _queues(session, queue_keys)}
        members = [m for m in members if m.queue_id in ids]
    from_config = [m for m in members if m.source == "config"]
    if from_config:
        keys = _keys(session, [m.queue_id for m in from_config])
        raise AccessError(
            f"{address} is a provider of {', '.join(keys)} by the config: remove it from "
            "providers = [...] of that [[queue]] in the config file instead"
        )
    if not reopen:
        last = [
            m.queue_id
            for m in members
            if session.scalar(
                select(func.count())
                .select_from(QueueMember)
                .where(QueueMember.queue_id == m.queue_id)
            )
            == 1
        ]
        if last:
            keys = _keys(session, last)
            raise AccessError(
                f"{address} is the last provider of {', '.join(keys)}: without one the queue "
                "is open to every provider. Add another provider first, or add --reopen to "
                "open it"
            )
    for m in members:
        session.delete(m)
    session.flush()
    return len(members)


def _keys(session: Session, ids: list[int]) -> list[str]:
    return list(session.scalars(select(Queue.key).where(Queue.id.in_(ids)).order_by(Queue.key)))


def sync_config(session: Session, settings: Any) -> None:
    """Make the config's ``providers = [...]`` of each queue the config-sourced members."""
    wanted: set[tuple[int, int]] = set()
    queues = {q.key: q for q in session.scalars(select(Queue))}
    for qs in settings.queue:
        for address in qs.providers:
            person = _provider(session, address)
            key = (queues[qs.key].id, person.id)
            wanted.add(key)
            member = session.get(QueueMember, key)
            if member is None:
                session.add(QueueMember(queue_id=key[0], person_id=key[1], source="config"))
            elif member.source != "config":
                member.source = "config"
    before = set(session.scalars(select(QueueMember.queue_id).distinct()))
    for member in session.scalars(select(QueueMember).where(QueueMember.source == "config")):
        if (member.queue_id, member.person_id) not in wanted:
            session.delete(member)
    session.flush()
    opened = before - set(session.scalars(select(QueueMember.queue_id).distinct()))
    for queue_key in _keys(session, sorted(opened)):
        log.warning(
            "queue %s has no providers any more (the config lists none): every provider "
            "sees it now",
            queue_key,
        )


def providers(session: Session) -> list[ProviderView]:
    """Every provider who is a member of a queue or has a role, with their queues."""
    keys = {q.id: q.key for q in session.scalars(select(Queue))}
    out: dict[int, ProviderView] = {}
    rows = session.execute(
        select(Person, QueueMember)
        .outerjoin(QueueMember, QueueMember.person_id == Person.id)
        .where((QueueMember.queue_id.is_not(None)) | Person.db_role.is_not(None))
        .order_by(Person.address)
    ).all()
    for person, member in rows:
        view = out.setdefault(
            person.id, ProviderView(person.address, person.display_name, person.db_role)
        )
        if member is not None:
            view.queues.append((keys[member.queue_id], member.source))
    for view in out.values():
        view.queues.sort()
    return list(out.values())


_OWNERS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def is_owner(session: Session) -> bool:
    """Whether this connection owns deskq's tables (may migrate, rebuild, set up queues).

    Asked once per engine: a role does not change under a connection pool.
    """
    engine = session.get_bind().engine
    if engine.dialect.name != "postgresql":
        return True
    if engine not in _OWNERS:
        _OWNERS[engine] = _owns_tables(session)
    return _OWNERS[engine]


def _owns_tables(session: Session) -> bool:
    owner = session.scalar(
        text(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'tickets' "
            "AND schemaname = ANY(current_schemas(false))"
        )
    )
    if owner is None or owner == session.scalar(text("SELECT current_user")):
        return True
    # A superuser, or a role that bypasses row-level security, sees everything too.
    return bool(
        session.scalar(
            text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        )
    )


def apply_roles(session: Session) -> list[str]:
    """PostgreSQL: a login role per provider, in the group role that may use deskq's tables.

    Run by the tables' owner (with CREATEROLE). Passwords are not deskq's business:
    set them with ``ALTER ROLE ... PASSWORD`` or use certificates or peer login.
    Returns what was done, one line each.
    """
    if session.get_bind().dialect.name != "postgresql":
        raise AccessError(
            "roles are PostgreSQL's: on SQLite deskq itself shows each provider only "
            "their queues (anyone who can read the file can read all of it)"
        )
    done: list[str] = []

    def exists(role: str) -> bool:
        return bool(session.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}))

    if not exists(GROUP_ROLE):
        session.execute(text(f"CREATE ROLE {GROUP_ROLE} NOLOGIN"))
        done.append(f"created group role {GROUP_ROLE}")
    database = session.scalar(text("SELECT current_database()"))
    quoted = '"' + str(database).replace('"', '""') + '"'
    session.execute(text(f"GRANT CONNECT ON DATABASE {quoted} TO {GROUP_ROLE}"))
    session.execute(text(f"GRANT USAGE ON SCHEMA public TO {GROUP_ROLE}"))
    # From scratch each time, so grants of an earlier deskq do not linger.
    session.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {GROUP_ROLE}"))
    session.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {GROUP_ROLE}"))
    for grant in PROVIDER_GRANTS:
        session.execute(text(f"GRANT {grant} TO {GROUP_ROLE}"))
    session.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {GROUP_ROLE}"))
    session.execute(text(f"GRANT EXECUTE ON FUNCTION deskq_visible_queues() TO {GROUP_ROLE}"))
    session.execute(text(f"GRANT EXECUTE ON FUNCTION deskq_search(text) TO {GROUP_ROLE}"))
    done.append(f"granted {GROUP_ROLE} the use of deskq's tables in {database}")
    for person in session.scalars(
        select(Person).where(Person.db_role.is_not(None)).order_by(Person.address)
    ):
        role = check_role(str(person.db_role))
        if not exists(role):
            session.execute(text(f"CREATE ROLE {role} LOGIN"))
            done.append(f"created login role {role} for {person.address} (set its password)")
        session.execute(text(f"GRANT {GROUP_ROLE} TO {role}"))
    return done
