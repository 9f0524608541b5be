"""notify listeners of new events (PostgreSQL)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:00:00

Every statement that inserts into ``events`` sends ``NOTIFY deskq_events`` with an
empty payload; PostgreSQL delivers it at commit and folds repeats within one
transaction, so a batch of a thousand events costs one notification.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION deskq_notify_events() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('deskq_events', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER deskq_events_notify AFTER INSERT ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION deskq_notify_events()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS deskq_events_notify ON events")
    op.execute("DROP FUNCTION IF EXISTS deskq_notify_events()")
