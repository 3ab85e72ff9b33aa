"""Shared test set-up.

The folder a test lives in sets its marker (unit, integration, e2e, security). Server fixtures
start the real control plane as a subprocess (``aicloud.testing.server``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

_TESTS = Path(__file__).parent
PG_ADMIN_URL = os.environ.get("AICLOUD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).relative_to(_TESTS)
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        if folder in {"unit", "integration", "e2e", "security"}:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One control plane (SQLite, local blobs) shared by the session; use unique names per test."""
    proc = ServerProcess(tmp_path_factory.mktemp("aicloud-home")).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(url=server.url, token=server.token) as c:
        yield c


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP with the admin token, for asserting on status codes and bodies."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60
    ) as c:
        yield c


@pytest.fixture
def unique() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers owned by one test (killed, restarted, or on PostgreSQL)."""
    started: list[ServerProcess] = []

    def make(
        home: Path | None = None, env: dict[str, str] | None = None, start: bool = True
    ) -> ServerProcess:
        proc = ServerProcess(home or tmp_path / f"home{len(started)}", env=env)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the real server; yields its SQLAlchemy URL, drops it after."""
    name = f"aicloud_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
