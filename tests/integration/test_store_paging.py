"""Paged lists in the metadata store, on SQLite and PostgreSQL: datasets, models, a model's versions,
deployments and jobs (by status and by kind) come back newest first, ties broken by id, in pages
that together hold every item once, with a count that agrees; another workspace's items never."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from aicloud.entities import JobKind, JobStatus
from aicloud.errors import NotFoundError
from aicloud.store import MetadataStore

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
    version_fields,
)

N = 7
PAGE = 3


def _walk(page: Callable[[int, int], Sequence[Any]], key: Callable[[Any], str]) -> list[str]:
    """Every item, page by page: each page but the last is full."""
    seen: list[str] = []
    offset = 0
    while True:
        items = page(offset, PAGE)
        seen += [key(x) for x in items]
        if len(items) < PAGE:
            return seen
        offset += PAGE


def test_datasets_models_and_deployments_page_newest_first(store: MetadataStore) -> None:
    ws, other = store.workspaces.create("paged"), store.workspaces.create("other")
    names = [f"d{i}" for i in range(N)]
    for name in names:
        store.datasets.create_version(workspace_id=ws.id, **version_fields(name=name))
        store.models.create_version(
            workspace_id=ws.id,
            name=name,
            files={"config.json": "b" * 64},
            signature={},
            config={},
            metrics={},
            lineage={},
        )
        store.deployments.create(workspace_id=ws.id, name=name, spec={}, model_version_id=None, desired=1)
    store.datasets.create_version(workspace_id=ws.id, **version_fields(name="d0"))  # a version, not a dataset
    store.datasets.create_version(workspace_id=other.id, **version_fields(name="theirs"))
    store.deployments.create(workspace_id=other.id, name="theirs", spec={}, model_version_id=None, desired=1)

    newest_first = names[::-1]
    datasets = store.datasets
    assert (
        _walk(lambda o, n: datasets.list_datasets(ws.id, offset=o, limit=n), lambda d: d.name) == newest_first
    )
    assert [d.name for d in datasets.list_datasets(ws.id)] == newest_first  # no limit: all of them
    assert datasets.count_datasets(ws.id) == N and datasets.count_datasets(other.id) == 1
    assert (
        _walk(lambda o, n: store.models.list_models(ws.id, offset=o, limit=n), lambda m: m.name)
        == newest_first
    )
    assert store.models.count_models(ws.id) == N and store.models.count_models(other.id) == 0
    deps = store.deployments
    assert _walk(lambda o, n: deps.list(ws.id, offset=o, limit=n), lambda d: d.name) == newest_first
    assert deps.count(ws.id) == N and [d.name for d in deps.list(other.id)] == ["theirs"]
    assert datasets.list_datasets(ws.id, offset=N, limit=PAGE) == []
    version = store.models.get_version(ws.id, "d1")
    store.deployments.create(workspace_id=ws.id, name="v", spec={}, model_version_id=version.id, desired=1)
    assert [d.name for d in deps.list(ws.id, model_version_id=version.id)] == ["v"]


def test_a_models_versions_page_either_way_with_their_aliases(store: MetadataStore) -> None:
    ws = store.workspaces.create("versions")
    for _ in range(N):
        store.models.create_version(
            workspace_id=ws.id,
            name="m",
            files={"config.json": "c" * 64},
            signature={},
            config={},
            metrics={},
            lineage={},
        )
    store.models.set_alias(ws.id, "m", "production", 2)
    models = store.models

    def versions(newest: bool) -> list[str]:
        return _walk(
            lambda o, n: models.list_versions(ws.id, "m", offset=o, limit=n, newest_first=newest),
            lambda v: str(v.version),
        )

    assert versions(False) == [str(i) for i in range(1, N + 1)]
    assert versions(True) == [str(i) for i in range(N, 0, -1)]
    page = models.list_versions(ws.id, "m", offset=4, limit=PAGE, newest_first=True)  # 3, 2, 1
    assert [(v.version, v.aliases) for v in page] == [(3, []), (2, ["production"]), (1, [])]
    assert models.count_versions(ws.id, "m") == N
    model = models.get_model(ws.id, "m")
    assert (model.latest_version, model.aliases) == (N, {"production": 2})
    with pytest.raises(NotFoundError):
        models.count_versions(ws.id, "nope")
    with pytest.raises(NotFoundError):
        models.get_model(ws.id, "nope")
    ds = [store.datasets.create_version(workspace_id=ws.id, **version_fields(name="v")) for _ in range(4)]
    got = store.datasets.list_versions(ws.id, "v", offset=1, limit=2, newest_first=True)
    assert [v.version for v in got] == [ds[2].version, ds[1].version]


def test_jobs_page_by_status_and_by_kind(store: MetadataStore) -> None:
    ws, other = store.workspaces.create("jobs"), store.workspaces.create("other-jobs")
    made = []
    for i in range(N):
        kind = JobKind.SWEEP if i % 2 else JobKind.COMMAND
        made.append(store.jobs.create(workspace_id=ws.id, name=f"j{i}", kind=kind, spec={}))
    store.jobs.create(workspace_id=other.id, name="theirs", kind=JobKind.SWEEP, spec={})
    store.jobs.request_cancel(ws.id, made[0].id)
    jobs = store.jobs

    everything = _walk(lambda o, n: jobs.list(ws.id, offset=o, limit=n), lambda j: j.name)
    assert everything == [f"j{i}" for i in range(N - 1, -1, -1)]
    sweeps = _walk(lambda o, n: jobs.list(ws.id, kind=JobKind.SWEEP, offset=o, limit=n), lambda j: j.name)
    assert sweeps == ["j5", "j3", "j1"]
    assert jobs.count(ws.id) == N and jobs.count(ws.id, kind=JobKind.SWEEP) == 3
    assert jobs.count(ws.id, status=JobStatus.PENDING) == N - 1
    assert jobs.count(ws.id, status=JobStatus.CANCELLED, kind=JobKind.COMMAND) == 1
    assert jobs.count(other.id, kind=JobKind.SWEEP) == 1
    pending = jobs.list(ws.id, status=JobStatus.PENDING, offset=N - 2, limit=PAGE)
    assert [j.name for j in pending] == ["j1"]
