"""Schema migrations with Alembic, configured in code so they work from an installed wheel.

``upgrade(url)`` brings a database to head; running it again is a no-op, and concurrent
upgrades (two servers starting at once) queue behind one lock: SQLite's write lock taken by
``BEGIN IMMEDIATE``, or a PostgreSQL transaction-level advisory lock. The whole upgrade is
one transaction, so a failed migration leaves the database as it was.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from aicloud.errors import StoreSchemaError
from aicloud.store.sql.session import create_db_engine, retry_busy, safe_url, writer

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The pg_advisory_xact_lock key that serialises upgrades: "aicloudM" in ASCII, as a bigint.
_PG_LOCK_KEY = 0x61_69_63_6C_6F_75_64_4D


def alembic_config() -> Config:
    """Alembic's configuration, pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("aicloud ships no migrations")
    return head


def upgrade(url: str) -> None:
    """Upgrade the database at ``url`` to head (``aicloud admin migrate``)."""
    engine = create_db_engine(url)
    try:
        upgrade_engine(engine)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at; None for an empty database."""
    engine = create_db_engine(url)
    try:
        return current_revision_engine(engine)
    finally:
        engine.dispose()


def check_schema(url: str) -> None:
    """Raise StoreSchemaError unless the database at ``url`` is at head."""
    engine = create_db_engine(url)
    try:
        check_schema_engine(engine)
    finally:
        engine.dispose()


def upgrade_engine(engine: Engine) -> None:
    def once() -> None:
        with writer(engine).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    retry_busy(once)


def current_revision_engine(engine: Engine) -> str | None:
    def once() -> str | None:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    return retry_busy(once)


def check_schema_engine(engine: Engine) -> None:
    current = current_revision_engine(engine)
    head = head_revision()
    if current == head:
        return
    where = safe_url(engine.url)
    details = {"url": where, "current": current, "head": head}
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise StoreSchemaError(
            f"the database at {where} is at revision {current}, which this version of aicloud "
            f"does not know (it needs {head}): upgrade aicloud",
            details=details,
        )
    raise StoreSchemaError(
        f"the database at {where} is at revision {current or 'none'}, aicloud needs {head}: "
        "run `aicloud admin migrate`",
        details=details,
    )
