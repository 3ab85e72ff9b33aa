"""Fixtures for metadata-store tests: a fresh SQLite file or a fresh PostgreSQL database.

PostgreSQL runs at ``AICLOUD_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Every test gets its own database,
``aicloud_test_<random>``, created and dropped through that server's admin connection, so
parallel test runs never collide. An unreachable server fails the test, unless
``AICLOUD_TEST_SKIP_POSTGRES=1`` says to skip.

Import the fixtures into a test module: ``from store_fixtures import store_fixture`` makes
``store`` available (each function is registered under the name without ``_fixture``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from aicloud.errors import ConflictError
from aicloud.store import MetadataStore, open_store

POSTGRES_SERVER_URL = os.environ.get(
    "AICLOUD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SKIP_POSTGRES = os.environ.get("AICLOUD_TEST_SKIP_POSTGRES") == "1"


def _admin_execute(sql: str) -> None:
    engine = create_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture(name="postgres_url")
def postgres_url_fixture() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"aicloud_test_{secrets.token_hex(6)}"
    try:
        _admin_execute(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        where = make_url(POSTGRES_SERVER_URL).render_as_string(hide_password=True)
        reason = f"PostgreSQL at {where} is unreachable: {str(exc.orig).strip()}"
        if SKIP_POSTGRES:
            pytest.skip(reason)
        pytest.fail(f"{reason} (set AICLOUD_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests)")
    try:
        yield make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(name="sqlite_url")
def sqlite_url_fixture(tmp_path: Path) -> str:
    """The URL of a new SQLite file (not in memory: WAL and locking behave as in production)."""
    return f"sqlite:///{tmp_path / 'aicloud.db'}"


@pytest.fixture(name="store_url", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url_fixture(request: pytest.FixtureRequest) -> str:
    """An empty database of each kind, in turn."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture(name="store")
def store_fixture(store_url: str) -> Iterator[MetadataStore]:
    """A migrated metadata store over ``store_url``, closed after the test."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


def version_fields(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``DatasetStore.create_version``, minus the workspace."""
    fields: dict[str, Any] = {
        "name": "iris",
        "format": "csv",
        "filename": "iris.csv",
        "blob_digest": "a" * 64,
        "size_bytes": 4551,
        "num_rows": 150,
        "schema": [{"name": "sepal_length", "dtype": "float64"}, {"name": "species", "dtype": "string"}],
        "stats": {"sepal_length": {"mean": 5.84, "min": 4.3, "null_count": 0}, "species": {"mean": None}},
    }
    fields.update(overrides)
    return fields


def create_versions_in_subprocess(url: str, count: int, start: Any) -> None:
    """Run in a spawned process: open (and migrate) the store, then add ``count`` versions."""
    if not start.wait(120):
        raise TimeoutError("the parent never started the race")
    store = open_store(url)
    try:
        workspace = store.workspaces.get_by_name("procs")
        if workspace is None:
            try:
                workspace = store.workspaces.create("procs")
            except ConflictError:
                workspace = store.workspaces.get_by_name("procs")
                assert workspace is not None
        for i in range(count):
            store.datasets.create_version(
                workspace_id=workspace.id,
                **version_fields(name="shared", blob_digest=f"{os.getpid():08x}{i:056x}"),
            )
    finally:
        store.close()
