"""Which extras are installed (aicloud.client.extras), what the server says without the postgres one,
and the system-metrics sampler's numbers."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

from aicloud.client import extras
from aicloud.client.extras import MissingExtraError, extra_packages, require_extra
from aicloud.config import Settings
from aicloud.server.main import run_server
from aicloud.store.sql.session import create_db_engine
from aicloud.training.tracking import process_tree_usage

REQUIRES = [
    "httpx>=0.27",
    'uvicorn[standard]>=0.29; extra == "server"',
    "sqlalchemy>=2.0.28 ; extra == 'server'",
    'torch>=2.4; extra == "train"',
    'aicloud[server,train]; extra == "all"',
    'pytest>=8; python_version >= "3.11" and extra == "test"',
]


def test_extra_packages_read_the_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras.metadata, "requires", lambda name: REQUIRES)
    assert extra_packages("server") == ["uvicorn", "sqlalchemy"]
    assert extra_packages("train") == ["torch"]
    assert extra_packages("test") == ["pytest"]
    assert extra_packages("all") == []  # itself: nothing of its own
    assert extra_packages("nope") == []


def test_without_metadata_nothing_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(name: str) -> list[str]:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(extras.metadata, "requires", gone)
    assert extra_packages("server") == []
    require_extra("server", "aicloud server")


def test_require_extra_names_the_extra_and_the_missing_packages() -> None:
    require_extra("server", "aicloud server", packages=["httpx", "pydantic"])
    with pytest.raises(MissingExtraError) as caught:
        require_extra("server", "aicloud up", packages=["httpx", *(f"aicloud-absent-{i}" for i in range(5))])
    err = caught.value
    assert isinstance(err, ImportError)
    assert err.extra == "server" and err.missing == [f"aicloud-absent-{i}" for i in range(5)]
    assert str(err) == (
        "aicloud up needs aicloud[server] (aicloud-absent-0, aicloud-absent-1, aicloud-absent-2 and 2 more"
        " not installed): pip install 'aicloud[server]'"
    )


PG_URL = "postgresql://aicloud:s3cret@db.example:5432/aicloud"


def test_a_postgresql_url_without_the_postgres_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails, as without the extra
    with pytest.raises(MissingExtraError) as caught:
        create_db_engine(PG_URL)
    err = caught.value
    assert err.extra == "postgres" and err.missing == ["psycopg"]
    assert str(err) == (
        "the metadata store at postgresql+psycopg://aicloud:***@db.example:5432/aicloud needs"
        " aicloud[postgres] (psycopg not installed): pip install 'aicloud[postgres]'"
    )


def test_the_server_without_the_postgres_extra_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    settings = Settings(home=tmp_path / "home", database_url=PG_URL, isolation="none")
    with pytest.raises(SystemExit) as caught:  # before uvicorn starts: no traceback in the log
        run_server(settings)
    message = str(caught.value.code)
    assert message.startswith("aicloud: cannot start: the metadata store at postgresql+psycopg://")
    assert (
        message.endswith("pip install 'aicloud[postgres]'")
        and "\n" not in message
        and "s3cret" not in message
    )


def test_a_postgresql_url_without_a_driver_uses_psycopg() -> None:
    pytest.importorskip("psycopg")
    engine = create_db_engine(PG_URL)  # connects only when used
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_process_tree_usage_of_this_process_and_of_a_gone_one() -> None:
    busy = sum(i * i for i in range(200_000))  # some CPU time of our own
    cpu, rss = process_tree_usage(os.getpid())
    assert busy and cpu > 0 and rss > 10_000_000
    assert process_tree_usage(2**22 + 12345) == (0.0, 0)  # above pid_max's default: no such process
