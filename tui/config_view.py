"""``deskq config check``: the effective config as TOML, with secrets masked."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from store.config import Settings
from store.db import masked

_IMAP_ONLY = {
    "host",
    "port",
    "security",
    "allow_insecure",
    "ca_file",
    "username",
    "auth",
    "token_command",
    "folder",
    "idle",
    "password_env",
    "password_command",
    "password_keyring",
}
_SECRET_SOURCES = ("password_env", "password_command", "password_keyring", "token_command")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _lines(obj: Any) -> list[str]:
    lines = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("internal") or value is None or dataclasses.is_dataclass(value):
            continue
        if (
            isinstance(value, tuple)
            and (not value or dataclasses.is_dataclass(value[0]))
            and (f.name in ("mailbox", "queue"))
        ):
            continue
        if getattr(obj, "source", None) == "maildir" and f.name in _IMAP_ONLY:
            continue
        if f.name == "url":
            value = masked(value)
        line = f"{f.name} = {_value(value)}"
        if f.name == "password_env":
            line += "  # set" if os.environ.get(value) else "  # NOT SET in this environment"
        elif f.name in _SECRET_SOURCES:
            line += "  # run when needed; output never stored or shown"
        lines.append(line)
    return lines


def render_effective(settings: Settings) -> str:
    """Every setting with its effective value (defaults included)."""
    out = _lines(settings)
    out += ["", "[database]", *_lines(settings.database)]
    for m in settings.mailbox:
        out += ["", "[[mailbox]]", *_lines(m)]
    for q in settings.queue:
        out += ["", "[[queue]]", *_lines(q)]
    out += ["", "[ingest]", *_lines(settings.ingest)]
    if settings.sending is not None:
        out += ["", "[sending]", *_lines(settings.sending)]
    return "\n".join(out) + "\n"
