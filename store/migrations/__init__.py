"""Alembic migrations for the deskq schema (applied automatically at start-up)."""
