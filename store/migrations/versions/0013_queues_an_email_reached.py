"""the queues an email reached, so a copy naming another queue opens a ticket once

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24 17:20:00

A copy of a stored email may name a queue the stored email did not reach (a Bcc seen
only in each copy's Delivered-To). ``raw_sources.queues`` records the ids of the
queues an email was delivered to, so such a copy opens a ticket there once, whatever
merges or splits moved the messages later. Email stored before has none recorded:
its copies open nothing, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # (A development build had the column in 0012.)
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("raw_sources")}
    if "queues" not in columns:
        op.add_column("raw_sources", sa.Column("queues", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("raw_sources") as batch:
        batch.drop_column("queues")
