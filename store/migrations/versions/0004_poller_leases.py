"""poller leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "poller_leases",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("pid_space", sa.String(length=64), nullable=True),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_poller_leases")),
    )


def downgrade() -> None:
    op.drop_table("poller_leases")
