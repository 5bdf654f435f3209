"""Alembic environment: the URL comes from the registry (edgejoule.registry.migrate.upgrade)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from edgejoule.registry.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                     poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
