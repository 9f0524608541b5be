"""The one TOML file a team writes, validated into frozen, documented settings.

Every setting is a dataclass field whose ``doc`` metadata is its one-line
documentation (the README's config reference is checked against these). Loading
never raises anything but :class:`ConfigError`, whose message names the file, the
key, what was expected and how to fix it. Secrets are never read here: settings
only say *where* a password comes from (see :mod:`store.secrets`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

APP_NAME = "deskq"
CONFIG_ENV = "DESKQ_CONFIG"
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class ConfigError(Exception):
    """A config file that cannot be used; the message is meant for the user as-is."""

    def __init__(self, path: Path | str, key: str, problem: str, fix: str = "") -> None:
        self.path, self.key, self.problem, self.fix = str(path), key, problem, fix
        message = f"config error in {path}: " + (f"key '{key}': {problem}" if key else problem)
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


def doc(text: str, **kw: Any) -> Any:
    """A dataclass field carrying its one-line documentation."""
    return field(metadata={"doc": text}, **kw)


def default_data_dir() -> Path:
    """Where deskq keeps its database by default (XDG data dir on Linux)."""
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False)


def default_config_path() -> Path:
    """The config file used when neither ``--config`` nor ``DESKQ_CONFIG`` is given."""
    from platformdirs import user_config_path

    return user_config_path(APP_NAME, appauthor=False) / "config.toml"


def default_database_url() -> str:
    """SQLite in the user's data directory."""
    return f"sqlite:///{default_data_dir() / 'deskq.db'}"


@dataclass(frozen=True)
class DatabaseSettings:
    """``[database]``: where the queue lives."""

    url: str = doc(
        "SQLAlchemy URL: sqlite:///PATH (default, ~ expanded) or postgresql+psycopg://USER@HOST/DB.",
        default_factory=default_database_url,
    )
    password_env: str | None = doc(
        "Environment variable holding the database password (kept out of the URL).", default=None
    )
    password_command: str | None = doc(
        "Command whose first output line is the database password.", default=None
    )
    busy_timeout_ms: int = doc(
        "SQLite only: how long a writer waits for another writer's lock, in ms.", default=10_000
    )


@dataclass(frozen=True)
class MailboxSettings:
    """``[[mailbox]]``: a shared mailbox deskq reads requests from."""

    name: str = doc("A short unique name for this mailbox (used in logs and sync state).")
    source: Literal["imap", "maildir"] = doc("Where mail comes from.", default="imap")
    path: str | None = doc(
        "Maildir source: the Maildir folder (with cur/ new/ tmp/).", default=None
    )
    host: str | None = doc("IMAP server host name.", default=None)
    port: int | None = doc("IMAP port; default 993 for tls, 143 otherwise.", default=None)
    security: Literal["tls", "starttls", "none"] = doc(
        "tls (IMAPS), starttls, or none (localhost only unless allow_insecure).", default="tls"
    )
    allow_insecure: bool = doc(
        "Allow security = none to a host other than localhost (passwords travel in clear).",
        default=False,
    )
    ca_file: str | None = doc(
        "PEM file of CA certificates to trust instead of the system store.", default=None
    )
    username: str | None = doc("IMAP login name.", default=None)
    password_env: str | None = doc("Environment variable holding the IMAP password.", default=None)
    password_command: str | None = doc(
        "Command whose first output line is the IMAP password (e.g. pass show helpdesk).",
        default=None,
    )
    password_keyring: str | None = doc(
        "System keyring service name to look the password up under (with username).",
        default=None,
    )
    auth: Literal["password", "xoauth2"] = doc(
        "password (LOGIN) or xoauth2 (then token_command).", default="password"
    )
    token_command: str | None = doc(
        "xoauth2: command printing a fresh OAuth2 access token.", default=None
    )
    folder: str = doc("Folder to read.", default="INBOX")
    after: str = doc(
        "What to do with a message once stored: seen, move:FOLDER, or none. Never deletes.",
        default="seen",
    )
    default_queue: str | None = doc(
        "Queue key for mail to no known alias; default: the first [[queue]].", default=None
    )
    poll_interval: int = doc(
        "Seconds between polls when the server has no IDLE (and between Maildir scans).",
        default=60,
    )
    idle: bool = doc("Use IMAP IDLE (push) when the server offers it.", default=True)

    @property
    def effective_port(self) -> int:
        """The port to connect to, defaulting by security mode."""
        if self.port is not None:
            return self.port
        return 993 if self.security == "tls" else 143


@dataclass(frozen=True)
class QueueSettings:
    """``[[queue]]``: a provider team's queue."""

    key: str = doc("Short unique key used in commands and filters (e.g. it).")
    name: str = doc('Display name, also used in From: "Alice via IT Help".')
    tag: str = doc("Subject tag: replies carry [TAG #id].")
    address: str = doc("The address replies are sent from (and Reply-To).")
    aliases: tuple[str, ...] = doc(
        "Addresses whose mail lands in this queue; address is always included.", default=()
    )
    signature: str = doc("Signature appended to replies from this queue.", default="")
    providers: tuple[str, ...] = doc(
        "Addresses of this queue's providers. A queue with providers (here or added with "
        "deskq providers add) is seen by them only; one without is open to every provider.",
        default=(),
    )
    allowed_domains: tuple[str, ...] = doc(
        "If set, only senders from these domains open tickets; others are quarantined.",
        default=(),
    )
    template_folders: tuple[str, ...] = doc(
        "Reply template folders for this queue, searched before [templates] folders.",
        default=(),
    )
    auto_ack: bool = doc("Send an automatic acknowledgement for each new ticket.", default=False)
    auto_ack_template: str = doc("Template used for the acknowledgement.", default="acknowledge")
    auto_ack_per_hour: int = doc(
        "At most this many acknowledgements per sender per hour (loop guard).", default=3
    )

    @property
    def all_aliases(self) -> tuple[str, ...]:
        """Lower-cased aliases, the sending address first, without repeats."""
        seen: dict[str, None] = {self.address.lower(): None}
        for alias in self.aliases:
            seen.setdefault(alias.lower(), None)
        return tuple(seen)


@dataclass(frozen=True)
class SendingSettings:
    """``[sending]``: how replies leave."""

    method: Literal["smtp", "command", "folder"] = doc(
        "smtp, command (a sendmail-compatible program reading the mail on stdin), or folder "
        "(write .eml files: for trying deskq out).",
        default="smtp",
    )
    command: str | None = doc("method = command: e.g. msmtp -t or sendmail -t.", default=None)
    folder: str | None = doc("method = folder: where the .eml files go.", default=None)
    sent_mailbox: str | None = doc(
        "Name of an IMAP [[mailbox]] to keep a copy of each sent email in; unset: no copy.",
        default=None,
    )
    sent_folder: str = doc("The folder of sent_mailbox the copies go to.", default="Sent")
    host: str = doc("SMTP server host name.", default="localhost")
    port: int | None = doc(
        "SMTP port; default 465 for tls, 587 for starttls, 25 for none.", default=None
    )
    security: Literal["tls", "starttls", "none"] = doc(
        "tls (SMTPS), starttls, or none (localhost only unless allow_insecure).",
        default="starttls",
    )
    allow_insecure: bool = doc(
        "Allow security = none to a host other than localhost.", default=False
    )
    ca_file: str | None = doc("PEM file of CA certificates to trust.", default=None)
    username: str | None = doc("SMTP AUTH user; no AUTH when unset.", default=None)
    password_env: str | None = doc("Environment variable holding the SMTP password.", default=None)
    password_command: str | None = doc(
        "Command whose first output line is the SMTP password.", default=None
    )
    password_keyring: str | None = doc(
        "System keyring service name for the SMTP password.", default=None
    )

    @property
    def effective_port(self) -> int:
        """The port to connect to, defaulting by security mode."""
        if self.port is not None:
            return self.port
        return {"tls": 465, "starttls": 587, "none": 25}[self.security]


@dataclass(frozen=True)
class CalendarSettings:
    """``[calendar]``: the business hours SLA clocks count in."""

    timezone: str = doc("IANA timezone of the working hours, e.g. Europe/Berlin.", default="UTC")
    hours: tuple[str, ...] = doc(
        'Opening hours, e.g. ["mon-fri 09:00-17:00", "sat 10:00-13:00"].',
        default=("mon-fri 09:00-17:00",),
    )
    country: str | None = doc(
        "Country code for public holidays (holidays package), e.g. DE.", default=None
    )
    subdivision: str | None = doc("Region for public holidays, e.g. BY (Bavaria).", default=None)
    closed: tuple[str, ...] = doc('Other closed dates, e.g. ["2026-12-24"].', default=())


@dataclass(frozen=True)
class SlaSettings:
    """``[[sla]]``: targets for a queue and/or priority (the most specific one applies)."""

    queue: str = doc("Queue key; empty: every queue.", default="")
    priority: str = doc("low, normal, high or urgent; empty: every priority.", default="")
    first_response: str | None = doc(
        "Business time to the first reply delivered: 30m, 4h, 2d (working days).", default=None
    )
    resolution: str | None = doc("Business time to resolution, e.g. 3d.", default=None)


@dataclass(frozen=True)
class TemplateSettings:
    """``[templates]``: where reply templates come from."""

    folders: tuple[str, ...] = doc(
        "Folders of your own templates; they override and extend the shipped ones.", default=()
    )


@dataclass(frozen=True)
class IngestSettings:
    """``[ingest]``: how mail becomes tickets."""

    max_message_bytes: int = doc(
        "Larger messages keep their raw source but are not parsed (ticket flagged too-large).",
        default=25 * 1024 * 1024,
    )
    batch_size: int = doc("Messages fetched and committed per transaction.", default=200)
    batch_bytes: int = doc(
        "Bytes of email fetched and committed per transaction at most (an email larger "
        "than this goes alone): bounds memory on mailboxes of large attachments.",
        default=32 * 1024 * 1024,
    )


@dataclass(frozen=True)
class Settings:
    """The whole config file."""

    me: str = doc("Your address: the provider using this terminal.", default="")
    name: str = doc('Your name, as replies show it: "Alex via IT Help".', default="")
    signature: str = doc("Your signature, added to your replies after the queue's.", default="")
    database: DatabaseSettings = doc("Where the queue lives.", default_factory=DatabaseSettings)
    mailbox: tuple[MailboxSettings, ...] = doc("Shared mailboxes to read.", default=())
    queue: tuple[QueueSettings, ...] = doc("Provider queues.", default=())
    ingest: IngestSettings = doc("How mail becomes tickets.", default_factory=IngestSettings)
    sending: SendingSettings | None = doc(
        "How replies are sent; unset: replies stay queued.", default=None
    )
    templates: TemplateSettings = doc(
        "Reply templates of your own.", default_factory=TemplateSettings
    )
    calendar: CalendarSettings = doc(
        "Business hours for SLA clocks.", default_factory=CalendarSettings
    )
    sla: tuple[SlaSettings, ...] = doc("SLA targets.", default=())
    path: Path | None = field(default=None, metadata={"internal": True})

    def business_calendar(self) -> Any:
        """The :class:`store.calendar.Calendar` of ``[calendar]`` (CalendarError, ValueError)."""
        from datetime import date

        from store.calendar import Calendar

        c = self.calendar
        closed = tuple(date.fromisoformat(d) for d in c.closed)
        return Calendar(c.timezone, c.hours, c.country, c.subdivision, closed)

    def sla_policy(self, queue: str, priority: str, day_length: float) -> Any:
        """The :class:`store.sla.Policy` for a ticket: the most specific ``[[sla]]`` wins."""
        from store.sla import Policy, parse_duration

        best, score = None, -1
        for rule in self.sla:
            if rule.queue not in ("", queue) or rule.priority not in ("", priority):
                continue
            rank = (2 if rule.queue else 0) + (1 if rule.priority else 0)
            if rank > score:
                best, score = rule, rank
        if best is None:
            return Policy()
        return Policy(
            parse_duration(best.first_response, day_length) if best.first_response else None,
            parse_duration(best.resolution, day_length) if best.resolution else None,
        )

    def queue_by_key(self, key: str) -> QueueSettings:
        """The queue with this key (KeyError if none)."""
        for q in self.queue:
            if q.key == key:
                return q
        raise KeyError(key)


# --------------------------------------------------------------------------- loading


def resolve_config_path(explicit: str | Path | None = None) -> Path:
    """``--config`` first, then ``$DESKQ_CONFIG``, then the platform default."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return default_config_path()


def load_settings(path: Path) -> Settings:
    """Read and validate a config file; raises :class:`ConfigError` on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path,
            "",
            "the file does not exist.",
            "run 'deskq init' to write a starter config, or pass --config PATH "
            f"(or set {CONFIG_ENV}).",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            path,
            "",
            f"the file cannot be read ({exc}).",
            "check its permissions and encoding (UTF-8).",
        ) from None
    return parse_settings(text, path)


def parse_settings(text: str, path: Path | str = "<config>") -> Settings:
    """Validate TOML text into :class:`Settings` (``path`` is only used in messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            path, "", f"the file is not valid TOML: {exc}.", "correct the syntax at that line."
        ) from None
    settings: Settings = _build(Settings, data, "", path)
    settings = dataclasses.replace(settings, path=Path(path))
    _check(settings, path)
    return settings


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(f'"{v}"' for v in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if dataclasses.is_dataclass(inner):
            return "an array of tables"
        plural = {str: "strings", int: "integers", bool: "booleans", float: "numbers"}
        return f"an array of {plural.get(inner, _type_name(inner))}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", bool: "true or false", float: "a number"}.get(
        tp, str(tp)
    )


def _describe(value: Any) -> str:
    kind = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "..."
    return f"{shown} ({kind})"


def _convert(tp: Any, value: Any, key: str, path: Path | str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value, key, path)
    ok: bool
    if origin is Literal:
        ok = value in typing.get_args(tp)
    elif origin is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list):
            ok = False
        elif dataclasses.is_dataclass(inner):
            return tuple(
                _build(typing.cast(type, inner), item, f"{key}[{i}]", path)
                for i, item in enumerate(value)
            )
        else:
            return tuple(_convert(inner, item, f"{key}[{i}]", path) for i, item in enumerate(value))
    elif dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, key, path)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(
            path,
            key,
            f"expected {_type_name(tp)}, got {_describe(value)}.",
            f"set {key} to {_type_name(tp)} (see the config reference in the README).",
        )
    return value


def _build(cls: type, data: Any, prefix: str, path: Path | str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            path,
            prefix,
            f"expected a table, got {_describe(data)}.",
            f"write it as [{prefix}] with key = value lines.",
        )
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for name in data:
        if name not in known:
            full = f"{prefix}.{name}" if prefix else name
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "remove it."
            raise ConfigError(
                path, full, "unknown key.", f"{hint} Known keys here: {', '.join(known)}."
            )
    values: dict[str, Any] = {}
    for name, f in known.items():
        full = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = _convert(hints[name], data[name], full, path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                path,
                full,
                "is required but missing.",
                f"add {name} = ... ({f.metadata.get('doc', '')}).",
            )
    return cls(**values)


def is_address(value: str) -> bool:
    """Whether ``value`` is a bare email address (no display name, no brackets)."""
    return bool(_ADDRESS.match(value))


def _check_address(path: Path | str, key: str, value: str) -> None:
    if not _ADDRESS.match(value):
        raise ConfigError(
            path,
            key,
            f"expected an email address like someone@corp.example, got {value!r}.",
            "write a bare address, without a display name or angle brackets.",
        )


def _check_secret_sources(path: Path | str, key: str, obj: Any) -> None:
    given = [
        n for n in ("password_env", "password_command", "password_keyring") if getattr(obj, n, None)
    ]
    if len(given) > 1:
        raise ConfigError(
            path,
            f"{key}.{given[1]}",
            f"conflicts with {key}.{given[0]}.",
            "keep exactly one password source.",
        )


def _check_security(
    path: Path | str, key: str, security: str, host: str | None, allow: bool
) -> None:
    if security == "none" and not allow and (host or "") not in _LOCAL_HOSTS:
        raise ConfigError(
            path,
            f"{key}.security",
            f'"none" sends the password in clear to {host!r}, which is not localhost.',
            f'use "tls" or "starttls", or set {key}.allow_insecure = true if you accept the risk.',
        )


def _check(s: Settings, path: Path | str) -> None:
    if s.me:
        _check_address(path, "me", s.me)
    _check_secret_sources(path, "database", s.database)
    if s.database.busy_timeout_ms < 0:
        raise ConfigError(
            path, "database.busy_timeout_ms", "must not be negative.", "use e.g. 10000."
        )
    keys: set[str] = set()
    owner: dict[str, str] = {}
    for i, q in enumerate(s.queue):
        k = f"queue[{i}]"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", q.key):
            raise ConfigError(
                path,
                f"{k}.key",
                f"{q.key!r} is not a valid queue key.",
                "use lower-case letters, digits, - and _ (e.g. it, hr, facilities).",
            )
        if q.key in keys:
            raise ConfigError(
                path,
                f"{k}.key",
                f"queue key {q.key!r} is used twice.",
                "give each queue its own key.",
            )
        keys.add(q.key)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", q.tag):
            raise ConfigError(
                path,
                f"{k}.tag",
                f"{q.tag!r} is not a valid subject tag.",
                "use letters, digits, - and _ only (e.g. IT), so [IT #12] can be recognised.",
            )
        _check_address(path, f"{k}.address", q.address)
        for j, alias in enumerate(q.aliases):
            _check_address(path, f"{k}.aliases[{j}]", alias)
        for alias in q.all_aliases:
            if alias in owner and owner[alias] != q.key:
                raise ConfigError(
                    path,
                    f"{k}.aliases",
                    f"{alias} already belongs to queue {owner[alias]!r}.",
                    "an address can feed only one queue; remove it from one of them.",
                )
            owner[alias] = q.key
    if s.ingest.max_message_bytes < 1024 or s.ingest.batch_size < 1:
        raise ConfigError(
            path,
            "ingest",
            "max_message_bytes must be >= 1024 and batch_size >= 1.",
            "use e.g. max_message_bytes = 26214400, batch_size = 200.",
        )
    if s.ingest.batch_bytes < 1024 * 1024:
        raise ConfigError(
            path,
            "ingest.batch_bytes",
            f"{s.ingest.batch_bytes} is below 1 MiB (most emails with an attachment "
            "would be a batch of their own).",
            "use e.g. batch_bytes = 33554432 (32 MiB, the default).",
        )
    for i, q in enumerate(s.queue):
        for j, domain in enumerate(q.allowed_domains):
            if not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", domain):
                raise ConfigError(
                    path,
                    f"queue[{i}].allowed_domains[{j}]",
                    f"{domain!r} is not a domain name.",
                    'write e.g. "corp.example".',
                )
    names: set[str] = set()
    for i, m in enumerate(s.mailbox):
        k = f"mailbox[{i}]"
        if m.name in names:
            raise ConfigError(
                path,
                f"{k}.name",
                f"mailbox name {m.name!r} is used twice.",
                "give each mailbox its own name.",
            )
        names.add(m.name)
        if not s.queue:
            raise ConfigError(
                path,
                f"{k}",
                "a mailbox needs at least one [[queue]] to deliver into.",
                "add a [[queue]] table (key, name, tag, address).",
            )
        if m.default_queue is not None and m.default_queue not in keys:
            raise ConfigError(
                path,
                f"{k}.default_queue",
                f"no queue has key {m.default_queue!r}.",
                f"use one of: {', '.join(sorted(keys))}.",
            )
        if not (m.after in ("seen", "none") or (m.after.startswith("move:") and len(m.after) > 5)):
            raise ConfigError(
                path,
                f"{k}.after",
                f"expected seen, none or move:FOLDER, got {m.after!r}.",
                'e.g. after = "move:Processed". deskq never deletes mail.',
            )
        if m.port is not None and not 0 < m.port < 65536:
            raise ConfigError(
                path, f"{k}.port", f"{m.port} is not a TCP port.", "use 1-65535, e.g. 993."
            )
        if m.poll_interval < 1:
            raise ConfigError(
                path, f"{k}.poll_interval", "must be at least 1 second.", "use e.g. 60."
            )
        _check_secret_sources(path, k, m)
        if m.source == "maildir":
            if not m.path:
                raise ConfigError(
                    path,
                    f"{k}.path",
                    "a maildir source needs a path.",
                    'add path = "/path/to/Maildir".',
                )
            continue
        for req in ("host", "username"):
            if not getattr(m, req):
                raise ConfigError(
                    path, f"{k}.{req}", "an imap source needs it.", f'add {req} = "...".'
                )
        _check_security(path, k, m.security, m.host, m.allow_insecure)
        if m.auth == "xoauth2" and not m.token_command:
            raise ConfigError(
                path,
                f"{k}.token_command",
                "auth = xoauth2 needs a token command.",
                'add token_command = "..." printing a fresh access token.',
            )
        if m.auth == "password" and not any(
            (m.password_env, m.password_command, m.password_keyring)
        ):
            raise ConfigError(
                path,
                f"{k}.password_env",
                "no password source given.",
                "add password_env, password_command or password_keyring.",
            )
    _check_sla(s, path)
    if s.sending is not None:
        snd = s.sending
        _check_secret_sources(path, "sending", snd)
        if snd.method == "command" and not snd.command:
            raise ConfigError(
                path,
                "sending.command",
                "method = command needs a command.",
                'add command = "msmtp -t" (or sendmail -t).',
            )
        if snd.method == "folder" and not snd.folder:
            raise ConfigError(
                path,
                "sending.folder",
                "method = folder needs a folder.",
                'add folder = "~/deskq-outbox" (each email becomes a .eml file there).',
            )
        if snd.sent_mailbox is not None:
            imap = [m.name for m in s.mailbox if m.source == "imap"]
            if snd.sent_mailbox not in imap:
                raise ConfigError(
                    path,
                    "sending.sent_mailbox",
                    f"{snd.sent_mailbox!r} is not the name of an IMAP [[mailbox]].",
                    f"use one of: {', '.join(imap) or '(none configured)'}, or remove it.",
                )
        if snd.port is not None and not 0 < snd.port < 65536:
            raise ConfigError(
                path, "sending.port", f"{snd.port} is not a TCP port.", "use 1-65535, e.g. 587."
            )
        if snd.method == "smtp":
            _check_security(path, "sending", snd.security, snd.host, snd.allow_insecure)


def _check_sla(s: Settings, path: Path | str) -> None:
    from store.calendar import CalendarError

    try:
        calendar = s.business_calendar()
    except CalendarError as exc:
        raise ConfigError(path, "calendar", f"{exc}.", "see the README's SLA section.") from None
    except ValueError:
        raise ConfigError(
            path,
            "calendar.closed",
            "a date is not written YYYY-MM-DD.",
            'e.g. closed = ["2026-12-24"].',
        ) from None
    queues = {q.key for q in s.queue}
    for i, rule in enumerate(s.sla):
        key = f"sla[{i}]"
        if rule.queue and queues and rule.queue not in queues:
            raise ConfigError(
                path,
                f"{key}.queue",
                f"no queue {rule.queue!r}.",
                f"use one of {', '.join(sorted(queues))}.",
            )
        if rule.priority and rule.priority not in ("low", "normal", "high", "urgent"):
            raise ConfigError(
                path,
                f"{key}.priority",
                f"{rule.priority!r} is not a priority.",
                "use low, normal, high or urgent.",
            )
        for name in ("first_response", "resolution"):
            value = getattr(rule, name)
            if value is not None:
                from store.sla import parse_duration

                try:
                    parse_duration(value, calendar.day_length)
                except ValueError as exc:
                    raise ConfigError(path, f"{key}.{name}", f"{exc}.", "e.g. 4h or 2d.") from None


# --------------------------------------------------------------------------- reference


def iter_reference() -> Iterator[tuple[str, str, str, str]]:
    """Every config key as (key, type, default, doc), for docs and ``config check``."""
    sections: list[tuple[str, type]] = [
        ("", Settings),
        ("database", DatabaseSettings),
        ("mailbox", MailboxSettings),
        ("queue", QueueSettings),
        ("ingest", IngestSettings),
        ("sending", SendingSettings),
        ("templates", TemplateSettings),
        ("calendar", CalendarSettings),
        ("sla", SlaSettings),
    ]
    for prefix, cls in sections:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            if prefix == "" and dataclasses.is_dataclass(_strip(hints[f.name])):
                continue
            if f.default is not dataclasses.MISSING:
                default = "" if f.default is None else repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = "(see doc)"
            else:
                default = "required"
            key = f"{prefix}.{f.name}" if prefix else f.name
            yield key, _type_name(hints[f.name]), default, f.metadata.get("doc", "")


def _strip(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return typing.get_args(tp)[0]
    return tp
