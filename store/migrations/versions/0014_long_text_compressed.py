"""the body of a long message past its first 16,384 characters, compressed

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 03:10:00

``messages.text_body`` keeps the first ``codec.TEXT_INLINE`` characters of a body
(what search indexes, lists and previews read); ``messages.text_more`` the rest of a
longer one, compressed (Zstandard). Messages stored before keep their whole body in
``text_body`` and no ``text_more``: nothing is rewritten.

SQLite before 3.35 cannot drop a column: there a downgrade empties it instead.
"""

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from store.codec import join_text

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("text_more", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # The whole body back into text_body (search, on SQLite, re-indexes it by trigger).
    conn = op.get_bind()
    messages = sa.table(
        "messages",
        sa.column("id", sa.Integer),
        sa.column("text_body", sa.Text),
        sa.column("text_more", sa.LargeBinary),
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(messages.c.id, messages.c.text_body, messages.c.text_more)
            .where(messages.c.text_more.is_not(None), messages.c.id > last)
            .order_by(messages.c.id)
            .limit(500)
        ).all()
        if not rows:
            break
        for row in rows:
            conn.execute(
                sa.update(messages)
                .where(messages.c.id == row.id)
                .values(text_body=join_text(row.text_body, row.text_more))
            )
        last = rows[-1].id
    # A plain ALTER (SQLite 3.35+), not a batch copy of the table: that would drop
    # the search triggers on messages.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        op.execute("UPDATE messages SET text_more = NULL WHERE text_more IS NOT NULL")
    else:
        op.execute("ALTER TABLE messages DROP COLUMN text_more")
