"""access hardening: policies that also check what a row points at (PostgreSQL)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:20:00

Row-level security of 0005 checked the row's own ticket only. A provider's role could
still point a row of its own at another queue's data: a message at another queue's raw
source, a link or a merge at a hidden ticket. Now:

- messages a provider inserts carry no raw source (only the owner's ingestion does);
- raw sources are read-only for providers, blobs readable through visible attachments
  and insertable (a reply's attachment) but never changed;
- a link needs both of its tickets visible; a ticket may be merged only into a visible
  one (checked through ``deskq_ticket_queue``, which reads past the policies, since a
  policy on tickets cannot query tickets again).

The grants that go with it (column grants on people and messages) are made by
``deskq providers roles`` (store/access.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OF_TICKET = "EXISTS (SELECT 1 FROM tickets t WHERE t.id = {col})"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION deskq_ticket_queue(ticket integer) RETURNS integer
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT queue_id FROM tickets WHERE id = ticket
        $$
        """
    )
    op.execute(
        "CREATE POLICY deskq_merge_visible ON tickets AS RESTRICTIVE FOR UPDATE "
        "USING (true) WITH CHECK (merged_into_id IS NULL OR "
        "deskq_ticket_queue(merged_into_id) IN (SELECT deskq_visible_queues()))"
    )
    op.execute(
        "CREATE POLICY deskq_merge_visible_insert ON tickets AS RESTRICTIVE FOR INSERT "
        "WITH CHECK (merged_into_id IS NULL OR "
        "deskq_ticket_queue(merged_into_id) IN (SELECT deskq_visible_queues()))"
    )
    op.execute(
        "CREATE POLICY deskq_no_raw ON messages AS RESTRICTIVE FOR INSERT "
        "WITH CHECK (raw_id IS NULL)"
    )
    op.execute("DROP POLICY deskq_queue_access ON ticket_links")
    both = (
        OF_TICKET.format(col="ticket_links.ticket_id")
        + " AND "
        + OF_TICKET.format(col="ticket_links.other_id")
    )
    op.execute(f"CREATE POLICY deskq_queue_access ON ticket_links USING ({both})")
    op.execute("DROP POLICY deskq_queue_access ON blobs")
    op.execute(
        "CREATE POLICY deskq_queue_access ON blobs FOR SELECT USING "
        "(EXISTS (SELECT 1 FROM attachments a WHERE a.sha256 = blobs.sha256))"
    )
    op.execute("CREATE POLICY deskq_insert_blob ON blobs FOR INSERT WITH CHECK (true)")
    op.execute("DROP POLICY deskq_queue_access ON raw_sources")
    op.execute(
        "CREATE POLICY deskq_queue_access ON raw_sources FOR SELECT USING "
        "(EXISTS (SELECT 1 FROM messages m WHERE m.raw_id = raw_sources.id))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP POLICY deskq_merge_visible ON tickets")
    op.execute("DROP POLICY deskq_merge_visible_insert ON tickets")
    op.execute("DROP POLICY deskq_no_raw ON messages")
    op.execute("DROP FUNCTION deskq_ticket_queue(integer)")
    for table, cond in (
        ("ticket_links", OF_TICKET.format(col="ticket_links.ticket_id")),
        ("blobs", "EXISTS (SELECT 1 FROM attachments a WHERE a.sha256 = blobs.sha256)"),
        ("raw_sources", "EXISTS (SELECT 1 FROM messages m WHERE m.raw_id = raw_sources.id)"),
    ):
        op.execute(f"DROP POLICY deskq_queue_access ON {table}")
        op.execute(
            f"CREATE POLICY deskq_queue_access ON {table} USING ({cond}) WITH CHECK ({cond})"
        )
    op.execute("DROP POLICY deskq_insert_blob ON blobs")
