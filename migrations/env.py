"""Alembic environment: the URL comes from the caller's settings, the schema from `Base.metadata`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from storage.db.tables import Base

config = context.config
target_metadata = Base.metadata

# The views are created by migrations and have no model: autogenerate must not see them as drift.
VIEWS = {"instance_results", "study_results"}


def include_object(obj, name, type_, reflected, compare_to):  # noqa: ANN001 - Alembic's hook signature
    return not (type_ == "table" and name in VIEWS)


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes["database_url"],
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        include_object=include_object,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # migrations.upgrade() passes the URL (never a connection): one way in.
    engine = create_engine(config.attributes["database_url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            include_object=include_object,
            # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
