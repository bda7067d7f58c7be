"""Alembic environment: runs against the engine the caller passes in, never a URL from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from storage.models import Base

MIGRATION_LOCK = 0x62757A6F6E  # "buzon": one key for every Buzón database on a server

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("run migrations through storage.engine.upgrade(engine)")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Instances that start together on a fresh database would both create
            # alembic_version and one would die on its unique key: the first to
            # lock migrates, the others wait and then find the schema current.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
    connection.commit()
