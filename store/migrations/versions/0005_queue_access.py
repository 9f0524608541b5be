"""queue access: members of queues, provider roles, row-level security on PostgreSQL

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 09:30:00

On PostgreSQL every table holding ticket content gets row-level security: a role
other than the tables' owner (a provider logging in as themself, see ``deskq providers
roles``) sees and writes only rows of the queues it may see. The owner (the role that
ran this migration: the poller, the sender, the administrator) is not restricted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The queues the current role may see: those without members, and those it is a member
# of (people.db_role names the role). Evaluated once per statement (STABLE).
VISIBLE_QUEUES = """
CREATE OR REPLACE FUNCTION deskq_visible_queues() RETURNS SETOF integer
LANGUAGE sql STABLE AS $$
    SELECT q.id FROM queues q
    WHERE NOT EXISTS (SELECT 1 FROM queue_members m WHERE m.queue_id = q.id)
       OR EXISTS (
            SELECT 1 FROM queue_members m JOIN people p ON p.id = m.person_id
            WHERE m.queue_id = q.id AND p.db_role = current_user
       )
$$
"""

OF_TICKET = "EXISTS (SELECT 1 FROM tickets t WHERE t.id = {table}.ticket_id)"
# table -> the condition a row must meet (each relies on the policy of the next table).
POLICIES = {
    "tickets": "queue_id IN (SELECT deskq_visible_queues())",
    "ticket_clocks": "queue_id IN (SELECT deskq_visible_queues())",
    "messages": OF_TICKET,
    "events": OF_TICKET,
    "ticket_tags": OF_TICKET,
    "ticket_flags": OF_TICKET,
    "ticket_reads": OF_TICKET,
    "ticket_links": OF_TICKET,
    "outbox": OF_TICKET,
    "attachments": "EXISTS (SELECT 1 FROM messages m WHERE m.id = attachments.message_id)",
    "raw_sources": "EXISTS (SELECT 1 FROM messages m WHERE m.raw_id = raw_sources.id)",
    "blobs": "EXISTS (SELECT 1 FROM attachments a WHERE a.sha256 = blobs.sha256)",
}


def upgrade() -> None:
    op.create_table(
        "queue_members",
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_queue_members_person_id_people")
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"], ["queues.id"], name=op.f("fk_queue_members_queue_id_queues")
        ),
        sa.PrimaryKeyConstraint("queue_id", "person_id", name=op.f("pk_queue_members")),
    )
    op.create_index(
        op.f("ix_queue_members_person_id"), "queue_members", ["person_id"], unique=False
    )
    # A plain ADD COLUMN and a unique index: on SQLite a table rebuild ("batch") of
    # people would have to drop a table every other table refers to.
    op.add_column("people", sa.Column("db_role", sa.String(length=63), nullable=True))
    op.create_index(op.f("ix_people_db_role"), "people", ["db_role"], unique=True)

    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(VISIBLE_QUEUES)
    for table, condition in POLICIES.items():
        cond = condition.format(table=table)
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY deskq_queue_access ON {table} USING ({cond}) WITH CHECK ({cond})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in POLICIES:
            op.execute(f"DROP POLICY IF EXISTS deskq_queue_access ON {table}")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute("DROP FUNCTION IF EXISTS deskq_visible_queues()")
    op.drop_index(op.f("ix_people_db_role"), table_name="people")
    op.execute("ALTER TABLE people DROP COLUMN db_role")  # SQLite 3.35+: no rebuild
    op.drop_index(op.f("ix_queue_members_person_id"), table_name="queue_members")
    op.drop_table("queue_members")
