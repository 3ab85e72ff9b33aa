"""Authentication, roles and tenancy over real HTTP against a real server process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from aicloud import Client
from aicloud.errors import NotFoundError, PermissionDeniedError, UnauthenticatedError
from aicloud.testing.server import ServerProcess

from helpers import assert_error, small_csv


def test_health_is_public(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer aic_tok_0000000000000000_" + "A" * 43},
        {"Authorization": "Bearer garbage"},
    ],
    ids=["missing", "empty", "basic", "wrong-secret", "garbage"],
)
def test_missing_or_wrong_token_is_401(server: ServerProcess, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/api/v1/datasets"),
        ("POST", "/api/v1/secrets"),
        ("GET", "/api/v1/tokens"),
        ("GET", "/openapi-not-a-route"),
    ]:
        r = httpx.request(method, f"{server.url}{path}", headers=headers)
        if path.startswith("/api"):
            assert_error(r, 401, "unauthenticated")
        else:
            assert_error(r, 404, "not_found")


def test_credentials_file_is_private(server: ServerProcess) -> None:
    assert (server.home / "credentials").stat().st_mode & 0o777 == 0o600
    assert server.token not in server.output()  # the token is never logged


def test_viewer_reads_but_cannot_write(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("ds")
    client.datasets.create(name, small_csv(tmp_path / "a.csv"))
    viewer = client.tokens.create(unique("viewer"), role="viewer")
    with Client(url=server.url, token=viewer.token) as v:
        assert v.datasets.get(name).version == 1
        with pytest.raises(PermissionDeniedError):
            v.datasets.create(name, small_csv(tmp_path / "b.csv"))
        with pytest.raises(PermissionDeniedError):
            v.secrets.create("NOPE", "x")
        with pytest.raises(PermissionDeniedError):
            v.tokens.list()
    assert [x.version for x in client.datasets.versions(name)] == [1]


def test_member_cannot_manage_tokens(
    client: Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    member = client.tokens.create(unique("member"), role="member")
    with Client(url=server.url, token=member.token) as m:
        with pytest.raises(PermissionDeniedError):
            m.tokens.create("escalate", role="admin")
        assert m.workspaces.whoami().role.value == "member"


def test_revoked_token_stops_working(
    client: Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    tok = client.tokens.create(unique("temp"), role="member")
    with Client(url=server.url, token=tok.token) as t:
        t.datasets.list()
        client.tokens.delete(tok.id)
        with pytest.raises(UnauthenticatedError):
            t.datasets.list()
    assert tok.id not in {x.id for x in client.tokens.list()}


def test_tokens_are_listed_without_secrets(http: httpx.Client, unique: Callable[[str], str]) -> None:
    created = http.post("/api/v1/tokens", json={"name": unique("t"), "role": "viewer"}).json()
    listed = http.get("/api/v1/tokens").json()
    assert created["token"].startswith("aic_")
    assert all("token" not in t and "secret_hash" not in t for t in listed)
    assert created["token"] not in http.get("/api/v1/tokens").text


def test_other_workspace_resources_are_404(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("private")
    client.datasets.create(name, small_csv(tmp_path / "p.csv"))
    other = client.workspaces.create(unique("team"))
    with Client(url=server.url, token=other.admin_token.token) as o:
        with pytest.raises(NotFoundError):
            o.datasets.get(name)
        r = httpx.get(
            f"{server.url}/api/v1/datasets/{name}/versions/1/content",
            headers={"Authorization": f"Bearer {other.admin_token.token}"},
        )
        assert_error(r, 404, "not_found")
        assert name not in {d.name for d in o.datasets.list()}
        with pytest.raises(PermissionDeniedError):  # only admins of 'default' create workspaces
            o.workspaces.create(unique("nested"))


def test_bad_token_bodies_are_422(http: httpx.Client) -> None:
    assert_error(http.post("/api/v1/tokens", json={"name": "x", "role": "root"}), 422, "validation_error")
    assert_error(http.post("/api/v1/tokens", json={"name": "../x"}), 422, "validation_error")
    assert_error(
        http.post("/api/v1/tokens", content=b"{not json", headers={"Content-Type": "application/json"}),
        422,
        "validation_error",
    )
    assert_error(http.delete("/api/v1/tokens/..%2F..%2Fetc"), 404)
    assert_error(http.delete("/api/v1/tokens/tok_0123456789abcdef"), 404, "not_found")
