"""Alembic environment: runs on the connection deskq hands over (see store.migrate)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from store.migrate import include_object
from store.models import Base


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.connect() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection: Any) -> None:
    on_step: Any = context.config.attributes.get("on_step")  # store.migrate's progress

    def applied(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        script = step.up_revision
        on_step(step.up_revision_id, (script.doc or "") if script is not None else "")

    context.configure(
        on_version_apply=applied if on_step is not None else None,
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object,
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
