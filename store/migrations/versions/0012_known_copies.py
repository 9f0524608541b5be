"""known copies: after-actions of messages that were copies of stored email

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 16:45:00

A pass cut short after its commit leaves after-actions (seen, move) to the next
connection, which finds the stored messages by their raw source's UID. A copy of an
email stored before (the same email in two mailboxes, a folder rescanned after a
UIDVALIDITY change) has no raw source of its own: it stayed unread forever. Such
copies are now recorded here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "known_copies",
        sa.Column("mailbox", sa.String(length=200), nullable=False),
        sa.Column("folder", sa.String(length=500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("raw_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["raw_id"],
            ["raw_sources.id"],
            name=op.f("fk_known_copies_raw_id_raw_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "mailbox", "folder", "uidvalidity", "uid", name=op.f("pk_known_copies")
        ),
    )


def downgrade() -> None:
    op.drop_table("known_copies")
