"""Fixtures of the security tests: a second workspace, its admin and a member token of it (what the
probe of issue #17 held)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from aicloud.testing.server import ServerProcess


def _client(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture(scope="module")
def ws_admin(server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP as the admin of a fresh workspace (not ``default``)."""
    with _client(server, server.token) as root:
        created = root.post("/api/v1/workspaces", json={"name": f"probe-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 201, created.text
    with _client(server, created.json()["admin_token"]["token"]) as c:
        yield c


@pytest.fixture(scope="module")
def member(server: ServerProcess, ws_admin: httpx.Client) -> Iterator[httpx.Client]:
    """Raw HTTP as a member of that workspace."""
    token = ws_admin.post("/api/v1/tokens", json={"name": "probe-member", "role": "member"})
    assert token.status_code == 201, token.text
    with _client(server, token.json()["token"]) as c:
        yield c
