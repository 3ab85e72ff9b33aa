"""The API docs need a token unless made public, and ``$AICLOUD_HOME`` is private to its user."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from aicloud.config import Settings
from aicloud.server.home import prepare_home
from aicloud.testing.server import ServerProcess

from helpers import assert_error

DOCS = ("/openapi.json", "/docs", "/redoc")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- 2. /docs, /redoc, /openapi.json ------------------------------------------------------------


def test_api_docs_need_a_token(server: ServerProcess, http: httpx.Client) -> None:
    for path in DOCS:
        assert_error(httpx.get(f"{server.url}{path}"), 401, "unauthenticated")
    viewer = http.post("/api/v1/tokens", json={"name": "docs-reader", "role": "viewer"}).json()["token"]
    headers = {"Authorization": f"Bearer {viewer}"}
    spec = httpx.get(f"{server.url}/openapi.json", headers=headers)
    assert spec.status_code == 200 and "/api/v1/datasets" in spec.json()["paths"]
    assert not any(p in spec.json()["paths"] for p in DOCS)
    for path in ("/docs", "/redoc"):
        page = httpx.get(f"{server.url}{path}", headers=headers)
        assert page.status_code == 200 and "/openapi.json" in page.text
    assert_error(httpx.get(f"{server.url}/docs/oauth2-redirect", headers=headers), 404)


def test_public_api_docs_setting_opens_only_the_docs(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server(env={"AICLOUD_PUBLIC_API_DOCS": "true"})
    for path in DOCS:
        assert httpx.get(f"{srv.url}{path}").status_code == 200, path
    assert_error(httpx.get(f"{srv.url}/api/v1/whoami"), 401, "unauthenticated")
    assert_error(httpx.get(f"{srv.url}/api/v1/datasets"), 401, "unauthenticated")


# --- 4. file modes --------------------------------------------------------------------------------


def _assert_private(home: Path) -> None:
    assert _mode(home) == 0o700, oct(_mode(home))
    for name in ("aicloud.db", "aicloud.db-wal", "aicloud.db-shm", "master.key", "credentials"):
        assert (home / name).exists(), name
        assert _mode(home / name) == 0o600, (name, oct(_mode(home / name)))


def test_a_new_home_is_private(make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    srv = make_server(home=home)  # the test harness creates the folder with the umask's mode
    _assert_private(home)
    assert httpx.get(f"{srv.url}/api/v1/whoami", headers={"Authorization": f"Bearer {srv.token}"}).is_success


def test_an_existing_home_with_wide_modes_is_tightened(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "old-home"
    make_server(home=home).stop()
    os.chmod(home, 0o755)
    for name in ("aicloud.db", "master.key", "credentials"):
        os.chmod(home / name, 0o644)
    srv = make_server(home=home)
    _assert_private(home)
    assert "aicloud.db had mode 644; changed it to 600" in srv.output()
    assert f"{home} had mode 755; changed it to 700" in srv.output()


def test_prepare_home_creates_the_home_and_database_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "a" / "home"
    with caplog.at_level(logging.WARNING, logger="aicloud.server"):
        prepare_home(Settings(home=home))
    assert _mode(home) == 0o700 and _mode(home / "aicloud.db") == 0o600
    assert caplog.records == []  # nothing to tighten on a new home
    elsewhere = tmp_path / "db" / "meta.db"
    prepare_home(Settings(home=home, database_url=f"sqlite:///{elsewhere}"))
    assert _mode(elsewhere) == 0o600
    prepare_home(Settings(home=home, database_url="sqlite://"))  # in memory: no file
