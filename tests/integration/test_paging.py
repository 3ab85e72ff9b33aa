"""Every list of the API is paged on the server: datasets, models, a model's versions, deployments
and jobs take ``offset`` and ``limit`` (bounded: beyond is a 422 in aicloud's error shape) and say
how many there are in all in ``X-Total-Count``, as ``GET /api/v1/runs`` does. Walking the pages of
a workspace finds each of its items exactly once, newest first, and none of another workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error

API = "/api/v1"
N = 5
PAGE = 2
#: One file a deployment's replica cannot find its class in: it fails fast, one process each.
NO_SERVICE = b"# this file defines no Service\n"


@dataclass
class Workspace:
    token: str
    http: httpx.Client
    client: Client
    datasets: list[str]
    models: list[str]
    deployments: list[str]
    jobs: list[str]


def _dataset(http: httpx.Client, name: str) -> None:
    r = http.post(f"{API}/datasets/{name}/versions", params={"filename": "d.csv"}, content=b"x,y\n1,2\n3,4\n")
    assert r.status_code == 201, r.text


def _model_version(http: httpx.Client, name: str, config: str) -> None:
    r = http.post(f"{API}/models/{name}/versions", json={"files": {"config.json": config}})
    assert r.status_code == 201, r.text


def _deployment(http: httpx.Client, name: str, code: str) -> None:
    body = {"name": name, "service": {"code": code, "entrypoint": "nothing.py:Missing"}}
    r = http.post(f"{API}/deployments", json=body)
    assert r.status_code == 201, r.text


def _job(http: httpx.Client) -> str:
    r = http.post(f"{API}/jobs", json={"kind": "command", "spec": {"command": "true"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _fill(server: ServerProcess, client: Client, name: str, n: int) -> Workspace:
    """A new workspace with ``n`` datasets, models, deployments and jobs, created in that order."""
    token = client.workspaces.create(name).admin_token.token
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    sdk = Client(url=server.url, token=token)
    config = sdk.blobs.upload(b'{"kind": "none"}')
    code = sdk.blobs.upload(NO_SERVICE)
    ws = Workspace(token, http, sdk, [], [], [], [])
    for i in range(n):
        ws.datasets.append(f"{name}-d{i}")
        _dataset(http, ws.datasets[-1])
        ws.models.append(f"{name}-m{i}")
        _model_version(http, ws.models[-1], config)
        ws.deployments.append(f"{name}-s{i}")
        _deployment(http, ws.deployments[-1], code)
        ws.jobs.append(_job(http))
    return ws


def _close(ws: Workspace) -> None:
    for name in ws.deployments:
        ws.http.delete(f"{API}/deployments/{name}")
    deadline = time.monotonic() + 60
    while ws.http.get(f"{API}/deployments").json() and time.monotonic() < deadline:
        time.sleep(0.2)
    ws.client.close()
    ws.http.close()


@pytest.fixture
def two(
    server: ServerProcess, client: Client, unique: Callable[[str], str]
) -> Iterator[tuple[Workspace, Workspace]]:
    """A workspace with more of each than a page holds, and another with one of each."""
    mine = _fill(server, client, unique("paged"), N)
    other = _fill(server, client, unique("other"), 1)
    try:
        yield mine, other
    finally:
        _close(mine)
        _close(other)


def _walk(http: httpx.Client, path: str, key: str, **params: object) -> tuple[list[str], int]:
    """Every item of a list, ``PAGE`` at a time; every page says the same total."""
    seen: list[str] = []
    totals = set()
    offset = 0
    while True:
        r = http.get(path, params={**params, "offset": offset, "limit": PAGE})
        assert r.status_code == 200, r.text
        totals.add(int(r.headers["X-Total-Count"]))
        items = r.json()
        assert len(items) <= PAGE
        seen += [str(x[key]) for x in items]
        if len(items) < PAGE:
            break
        offset += PAGE
    assert len(totals) == 1, totals
    return seen, totals.pop()


def test_every_list_pages_each_item_once_newest_first(two: tuple[Workspace, Workspace]) -> None:
    mine, other = two
    for path, key, names in (
        ("datasets", "name", mine.datasets),
        ("models", "name", mine.models),
        ("deployments", "name", mine.deployments),
        ("jobs", "id", mine.jobs),
    ):
        seen, total = _walk(mine.http, f"{API}/{path}", key)
        assert seen == names[::-1], path  # each once, newest first, none of the other workspace
        assert total == N, path
        theirs, total = _walk(other.http, f"{API}/{path}", key)
        assert (theirs, total) == ([str(x) for x in getattr(other, path)], 1), path
        past = mine.http.get(f"{API}/{path}", params={"offset": N, "limit": PAGE})
        assert past.json() == [] and past.headers["X-Total-Count"] == str(N), path


def test_jobs_filter_by_kind_and_a_models_versions_page(two: tuple[Workspace, Workspace]) -> None:
    mine, _ = two
    assert _walk(mine.http, f"{API}/jobs", "id", kind="command") == (mine.jobs[::-1], N)
    assert _walk(mine.http, f"{API}/jobs", "id", kind="sweep") == ([], 0)
    config = mine.client.blobs.upload(b'{"kind": "none"}')
    name = mine.models[0]
    for _ in range(N - 1):
        _model_version(mine.http, name, config)
    versions = f"{API}/models/{name}/versions"
    assert _walk(mine.http, versions, "version") == ([str(v) for v in range(1, N + 1)], N)
    newest = _walk(mine.http, versions, "version", newest_first="true")
    assert newest == ([str(v) for v in range(N, 0, -1)], N)
    assert [v.version for v in mine.client.models.versions(name, offset=1, limit=2)] == [2, 3]
    assert [m.name for m in mine.client.models.list(limit=2)] == mine.models[:-3:-1]
    assert [d.name for d in mine.client.datasets.list(offset=N - 1)] == mine.datasets[:1]
    assert [d.name for d in mine.client.deployments.list(limit=1)] == mine.deployments[-1:]
    assert [j.id for j in mine.client.jobs.list(kind="command", offset=1, limit=1)] == mine.jobs[-2:-1]


def test_the_console_lists_show_a_page_of_the_total(
    server: ServerProcess, two: tuple[Workspace, Workspace]
) -> None:
    mine, other = two
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        r = browser.post("/signin", data={"token": mine.token, "next": "/"})
        assert r.status_code == 303, r.text
        for path, names in (
            ("/datasets", mine.datasets),
            ("/models", mine.models),
            ("/deployments", mine.deployments),
            ("/jobs", mine.jobs),
        ):
            page = browser.get(path)
            assert page.status_code == 200, path
            assert f"1\u2013{N} of {N}" in page.text, path
            assert all(name in page.text for name in names), path
            theirs = [*other.datasets, *other.models, *other.deployments, *other.jobs]
            assert not any(name in page.text for name in theirs), path
            past = browser.get(path, params={"offset": 50})  # past the end: none, and the way back
            assert past.status_code == 200 and f"of {N}" in past.text and "Previous" in past.text, path
            assert not any(name in past.text for name in names), path
        assert "No sweeps yet" in browser.get("/sweeps").text
        assert browser.get("/").status_code == 200


def test_a_datasets_versions_page_in_the_api_sdk_and_cli(
    server: ServerProcess, two: tuple[Workspace, Workspace]
) -> None:
    mine, other = two
    name = mine.datasets[0]
    for _ in range(N - 1):
        _dataset(mine.http, name)
    versions = f"{API}/datasets/{name}/versions"
    assert _walk(mine.http, versions, "version") == ([str(v) for v in range(1, N + 1)], N)
    newest = _walk(mine.http, versions, "version", newest_first="true")
    assert newest == ([str(v) for v in range(N, 0, -1)], N)
    assert [v.version for v in mine.client.datasets.versions(name, offset=1, limit=2)] == [2, 3]
    assert other.http.get(versions).status_code == 404  # another workspace's dataset: not found

    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_URL=server.url, AICLOUD_TOKEN=mine.token, AICLOUD_HOME=str(server.home), COLUMNS="200")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "aicloud", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    page = cli("dataset", "versions", name, "--offset", "2", "--limit", "2", "-o", "json")
    assert [v["version"] for v in json.loads(page.stdout)] == [3, 4]
    assert "--offset 4 --limit 2" in page.stderr  # a full page says how to get the next one
    last = cli("dataset", "versions", name, "--offset", "4", "--limit", "2", "-o", "json")
    assert [v["version"] for v in json.loads(last.stdout)] == [5] and "next page" not in last.stderr
    jobs = cli("job", "list", "--limit", "2", "-o", "json")
    assert [j["id"] for j in json.loads(jobs.stdout)] == mine.jobs[:-3:-1]
    models = cli("model", "list", "--offset", str(N - 1), "-o", "json")
    assert [m["name"] for m in json.loads(models.stdout)] == mine.models[:1]
    datasets = cli("dataset", "list", "--limit", "1")
    assert mine.datasets[-1] in datasets.stdout and "--offset 1 --limit 1" in datasets.stderr


@pytest.mark.parametrize(
    "path",
    ["datasets", "models", "deployments", "jobs", "models/{model}/versions", "datasets/{model}/versions"],
)
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 1_000_001}, "offset"),
    ],
)
def test_bad_offset_or_limit_is_a_422_naming_it(
    http: httpx.Client,
    client: Client,
    unique: Callable[[str], str],
    path: str,
    params: dict[str, object],
    field: str,
) -> None:
    model = unique("bad-paging")
    if path.startswith("models/"):
        _model_version(http, model, client.blobs.upload(b"{}"))
    elif "{model}" in path:
        _dataset(http, model)
    r = http.get(f"{API}/{path.format(model=model)}", params=params)
    body = assert_error(r, 422, "validation_error")
    assert [d["field"] for d in body["details"]] == [field], body
