"""Alembic environment for aicloud.

``aicloud.store.sql.migrate`` passes an open connection, already inside the transaction
that holds the upgrade lock, as ``config.attributes["connection"]``; the migrations run in
that transaction. Without one (a hand-run ``alembic`` with ``sqlalchemy.url`` set), an
engine is made from the URL. Logging is left to the application: no ``fileConfig``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from aicloud.store.sql.session import create_db_engine, writer
from aicloud.store.sql.tables import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or run migrations with `aicloud admin migrate`")
    engine = create_db_engine(url)
    try:
        with writer(engine).begin() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
