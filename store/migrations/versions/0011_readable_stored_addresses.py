"""stored addresses readable: names beyond ASCII without RFC 2047 words

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 16:40:00

Messages stored the sender and recipients as header values (``email.utils.formataddr``):
a name such as "José Müller" became ``=?utf-8?q?Jos=C3=A9_M=C3=BCller?=``, which the
ticket screen and the "... wrote:" line of a quoting reply showed as it was. New
messages store ``José Müller <jose@corp.example>``; this rewrites the older ones the
same way. A value that does not decode is left as it was.
"""

import re
from collections.abc import Sequence
from email.header import decode_header, make_header
from email.utils import getaddresses

from alembic import op
from sqlalchemy import text

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("from_addr", "to_addrs", "cc_addrs")
_NEEDS_QUOTES = re.compile(r'[][\\()<>@,:;".]')
_QUOTED_SPECIALS = re.compile(r'[\\"]')


def _readable(value: str) -> str:
    """The same addresses, each name decoded (as mail.parse.display_address writes)."""
    out = []
    for name, address in getaddresses([value]):
        if not address:
            return value  # not a list this migration understands: left alone
        if "=?" in name:
            name = " ".join(str(make_header(decode_header(name))).split())
        if name and _NEEDS_QUOTES.search(name):
            name = '"' + _QUOTED_SPECIALS.sub(r"\\\g<0>", name) + '"'
        out.append(f"{name} <{address}>" if name else address)
    return ", ".join(out)


def upgrade() -> None:
    bind = op.get_bind()
    where = " OR ".join(f"{c} LIKE '%=?%'" for c in _COLUMNS)
    rows = bind.execute(text(f"SELECT id, {', '.join(_COLUMNS)} FROM messages WHERE {where}"))
    changed = []
    for row in rows.all():
        values = {}
        for column, value in zip(_COLUMNS, row[1:], strict=True):
            try:
                values[column] = _readable(value) if value and "=?" in value else value
            except Exception:  # noqa: BLE001 - an undecodable value stays as it was
                values[column] = value
        if any(values[c] != v for c, v in zip(_COLUMNS, row[1:], strict=True)):
            changed.append({"id": row[0], **values})
    if changed:
        assignments = ", ".join(f"{c} = :{c}" for c in _COLUMNS)
        bind.execute(text(f"UPDATE messages SET {assignments} WHERE id = :id"), changed)


def downgrade() -> None:
    """Nothing to undo: older deskq reads the readable form as well."""
