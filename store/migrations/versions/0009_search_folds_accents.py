"""search folds accents on PostgreSQL as on SQLite

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 16:00:00

SQLite's FTS5 tokenizer folds diacritics (``remove_diacritics 2``): "cafe" finds
"Café". PostgreSQL's 'simple' configuration did not, so the same words found other
tickets there. ``deskq_words`` is 'simple' with the ``unaccent`` dictionary before
it (a trusted extension shipped with PostgreSQL: the database owner may create it).
The search column is computed again for every message, and the search function of
migration 0008 uses the new configuration.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

from store.db import DatabaseError

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_CHARS = 65536  # as in 0001: search covers the first 64k characters of a body
# Token types that can carry letters beyond ASCII (asciiword and the like need no folding).
_FOLDED = "word, hword, hword_part"


def _search_column(config: str) -> None:
    op.execute("DROP INDEX IF EXISTS ix_messages_search_vector")
    op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector")
    op.execute(
        "ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
        f"setweight(to_tsvector('{config}', coalesce(subject, '')), 'A') || "
        f"setweight(to_tsvector('{config}', left(coalesce(text_body, ''), {SEARCH_CHARS})), 'B'))"
        " STORED"
    )
    op.execute("CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)")


def _search_function(config: str) -> None:
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION deskq_search(words text) RETURNS SETOF integer
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT DISTINCT m.ticket_id
            FROM messages m JOIN tickets t ON t.id = m.ticket_id
            WHERE m.search_vector @@ plainto_tsquery('{config}', words)
              AND (
                NOT EXISTS (SELECT 1 FROM queue_members q WHERE q.queue_id = t.queue_id)
                OR EXISTS (
                    SELECT 1 FROM queue_members q JOIN people p ON p.id = q.person_id
                    WHERE q.queue_id = t.queue_id AND p.db_role = session_user
                )
              )
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION deskq_search(text) FROM PUBLIC")


def _create_unaccent() -> None:
    bind = op.get_bind()
    if bind.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'unaccent'")).first():
        return
    available = bind.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'unaccent'")
    ).first()
    if not available:
        raise DatabaseError(
            "deskq's search needs PostgreSQL's unaccent extension, which this server does "
            "not have. Fix: install the server's contrib package (Debian and Ubuntu ship it "
            "with postgresql; elsewhere postgresql-contrib), then run deskq db upgrade again."
        )
    # In a savepoint: a refusal must leave the transaction usable for the message below.
    savepoint = bind.begin_nested()
    try:
        bind.execute(text("CREATE EXTENSION unaccent"))
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix below
        savepoint.rollback()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    else:
        savepoint.commit()
        return
    raise DatabaseError(
        f"deskq's search needs PostgreSQL's unaccent extension and could not create it "
        f"({reason}). Fix: as a superuser, run CREATE EXTENSION unaccent in this "
        "database (or make the deskq role its owner), then run deskq db upgrade again."
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _create_unaccent()
    op.execute("CREATE TEXT SEARCH CONFIGURATION deskq_words (COPY = simple)")
    op.execute(
        f"ALTER TEXT SEARCH CONFIGURATION deskq_words ALTER MAPPING FOR {_FOLDED} "
        "WITH unaccent, simple"
    )
    _search_column("deskq_words")
    _search_function("deskq_words")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _search_column("simple")
    _search_function("simple")
    op.execute("DROP TEXT SEARCH CONFIGURATION IF EXISTS deskq_words")
    # unaccent stays: other users of the database may rely on it by now.
