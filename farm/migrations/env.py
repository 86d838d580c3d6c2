"""Alembic's entry point for the farm's migrations, driven by `farm.schema` (which hands over a connection
already inside the transaction that holds the migration lock) or, without one, by the FARM_DATABASE_URL setting."""

from __future__ import annotations

from alembic import context

from farm.models import Base


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from farm.config import load_settings
        from farm.db import make_engine

        with make_engine(load_settings().database_url).begin() as conn:
            context.config.attributes["connection"] = conn
            run()
        return
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
