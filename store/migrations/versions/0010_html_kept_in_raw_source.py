"""messages keep whether they had HTML, not a copy of it

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 16:10:00

``messages.html_body`` held a second, uncompressed copy of each email's HTML part,
read only to say whether there was one. HTML parts are often several times the
size of the text, and the raw source (kept, compressed) has it anyway. The column
becomes a flag, ``has_html``.

SQLite before 3.35 cannot drop a column: there the old column is emptied instead and
left in place, unused (nothing reads or writes it).
"""

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("has_html", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute("UPDATE messages SET has_html = true WHERE html_body IS NOT NULL")
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        op.execute("UPDATE messages SET html_body = NULL WHERE html_body IS NOT NULL")
    else:
        op.execute("ALTER TABLE messages DROP COLUMN html_body")


def downgrade() -> None:
    # The HTML itself is not copied back: it is in each message's raw source.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("messages")}
    if "html_body" not in columns:
        op.add_column("messages", sa.Column("html_body", sa.Text(), nullable=True))
    op.execute("ALTER TABLE messages DROP COLUMN has_html")
