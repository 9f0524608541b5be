"""search index kept right when a long body is edited (SQLite)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 12:10:00

The index holds the first 64k characters of each body (0001). Its UPDATE trigger
removed an edited message's old entry with the *whole* old body, not those first
64k characters: for a longer body that asks FTS5 to remove words it never indexed,
which corrupts an external-content index. No deskq command edits a message's
subject or body yet (merging moves messages, it does not edit them), so no database
was damaged; the trigger is corrected before one does.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEARCH_CHARS = 65536


def _trigger(old_text: str) -> str:
    return (
        "CREATE TRIGGER messages_fts_au AFTER UPDATE OF subject, text_body ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, subject, text_body) "
        f"VALUES ('delete', old.id, old.subject, {old_text}); "
        "INSERT INTO messages_fts(rowid, subject, text_body) "
        f"VALUES (new.id, new.subject, substr(new.text_body, 1, {_SEARCH_CHARS})); END"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL's generated column follows the row by itself
    op.execute("DROP TRIGGER IF EXISTS messages_fts_au")
    op.execute(_trigger(f"substr(old.text_body, 1, {_SEARCH_CHARS})"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS messages_fts_au")
    op.execute(_trigger("old.text_body"))
