"""The deployment store on SQLite and PostgreSQL, and the in-memory fake the controller tests use.

Tests taking ``serving`` run once per backend (sqlite, postgresql, memory): the fake must
keep the SQL store's semantics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from aicloud.entities.serving import DeploymentStatus, ReplicaState
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store import MetadataStore, open_store
from aicloud.store.serving import DeploymentStore
from aicloud.testing.deployments import InMemoryDeploymentStore

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
)

SPEC = {"model": "digits@production", "min_replicas": 1, "max_replicas": 3, "target_inflight": 4.0}


@dataclass
class Serving:
    deployments: DeploymentStore
    workspace: Callable[[str], str]  # name → id


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "memory"]


@pytest.fixture(name="serving", params=BACKENDS)
def serving_fixture(request: pytest.FixtureRequest) -> Iterator[Serving]:
    if request.param == "memory":
        yield Serving(InMemoryDeploymentStore(), workspace=lambda name: f"ws_{name}")
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    store = open_store(url)
    try:
        yield Serving(store.deployments, workspace=lambda name: store.workspaces.create(name).id)
    finally:
        store.close()


def test_create_get_list(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    other = serving.workspace("beta")
    store = serving.deployments
    d = store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id="mv_1", desired=1)
    assert d.status == DeploymentStatus.PENDING
    assert d.generation == 1
    assert d.desired_replicas == 1
    assert d.spec == SPEC
    assert d.model_version_id == "mv_1"
    assert d.message is None
    assert d.created_at.tzinfo is not None and d.created_at == d.updated_at

    assert store.get(ws, "digits") == d
    assert store.get_any(d.id) == d
    with pytest.raises(NotFoundError):
        store.get(other, "digits")  # another workspace's deployment is not visible
    with pytest.raises(NotFoundError):
        store.get_any("dep_missing")

    b = store.create(
        workspace_id=ws, name="bert", spec={"service": {"code": "x"}}, model_version_id=None, desired=0
    )
    c = store.create(workspace_id=other, name="digits", spec=SPEC, model_version_id=None, desired=2)
    assert [x.name for x in store.list(ws)] == ["bert", "digits"]
    assert [x.id for x in store.list(other)] == [c.id]
    assert {x.id for x in store.list_all()} == {d.id, b.id, c.id}


def test_name_is_unique_in_a_workspace(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    serving.deployments.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id=None, desired=1)
    with pytest.raises(ConflictError, match="digits"):
        serving.deployments.create(workspace_id=ws, name="digits", spec={}, model_version_id=None, desired=1)


def test_update_spec_bumps_generation(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    store = serving.deployments
    d = store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id="mv_1", desired=1)
    new_spec = {**SPEC, "max_batch_size": 8, "ratio": (1, 2)}
    u = store.update_spec(ws, "digits", new_spec, "mv_2")
    assert u.generation == 2
    assert u.spec == {**SPEC, "max_batch_size": 8, "ratio": [1, 2]}  # as JSON reads back
    assert u.model_version_id == "mv_2"
    assert u.updated_at >= d.updated_at
    assert store.get_any(d.id) == u
    assert store.update_spec(ws, "digits", SPEC, None).model_version_id is None
    with pytest.raises(NotFoundError):
        store.update_spec(ws, "nope", SPEC, None)


def test_concurrent_spec_updates_never_lose_a_generation(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    store = serving.deployments
    store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id=None, desired=1)
    n = 8
    barrier = threading.Barrier(n)

    def bump(i: int) -> int:
        barrier.wait(timeout=30)
        return store.update_spec(ws, "digits", {**SPEC, "i": i}, None).generation

    with ThreadPoolExecutor(max_workers=n) as pool:
        generations = sorted(pool.map(bump, range(n)))
    assert generations == list(range(2, n + 2))
    assert store.get(ws, "digits").generation == n + 1


def test_desired_and_status(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    store = serving.deployments
    d = store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id=None, desired=1)
    assert store.set_desired(d.id, 3).desired_replicas == 3
    with pytest.raises(ValueError):
        store.set_desired(d.id, -1)
    failed = store.set_status(d.id, DeploymentStatus.FAILED, "boom")
    assert (failed.status, failed.message) == (DeploymentStatus.FAILED, "boom")
    ready = store.set_status(d.id, DeploymentStatus.READY)
    assert (ready.status, ready.message) == (DeploymentStatus.READY, None)  # None clears the message
    assert store.get_any(d.id).desired_replicas == 3
    for call in (
        lambda: store.set_desired("dep_x", 1),
        lambda: store.set_status("dep_x", DeploymentStatus.READY),
    ):
        with pytest.raises(NotFoundError):
            call()


def test_replicas(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    store = serving.deployments
    d = store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id=None, desired=2)
    other = store.create(workspace_id=ws, name="other", spec=SPEC, model_version_id=None, desired=1)
    r1 = store.add_replica(d.id, generation=1, port=40001, handle={})
    r2 = store.add_replica(d.id, generation=1, port=40002, handle={"pid": 12, "t": (1, 2)})
    store.add_replica(other.id, generation=1, port=40003, handle={})
    assert r1.state == ReplicaState.STARTING and r1.ready_at is None
    assert r1.url == "http://127.0.0.1:40001"
    assert r2.handle == {"pid": 12, "t": [1, 2]}
    assert [r.id for r in store.replicas(d.id)] == [r1.id, r2.id]  # oldest first

    assert r1.key_sealed is None
    h = store.update_replica(r1.id, handle={"executor": "local", "pid": 1}, key_sealed=b"\x00sealed\xff")
    assert h.handle == {"executor": "local", "pid": 1} and h.state == ReplicaState.STARTING
    assert h.key_sealed == b"\x00sealed\xff" and "sealed" not in repr(h)  # kept with the replica
    assert store.replicas(d.id)[0].key_sealed == b"\x00sealed\xff"
    ready = store.update_replica(r1.id, state=ReplicaState.READY)
    assert ready.ready_at is not None and ready.handle == h.handle
    draining = store.update_replica(r1.id, state=ReplicaState.DRAINING, message="surplus")
    assert (draining.state, draining.message, draining.ready_at) == (
        ReplicaState.DRAINING,
        "surplus",
        ready.ready_at,
    )
    assert store.update_replica(r1.id) == draining  # nothing to change: read back
    assert store.replicas(d.id)[0] == draining

    store.remove_replica(r1.id)
    store.remove_replica(r1.id)  # idempotent
    assert [r.id for r in store.replicas(d.id)] == [r2.id]
    with pytest.raises(NotFoundError):
        store.update_replica(r1.id, state=ReplicaState.READY)
    with pytest.raises(NotFoundError):
        store.add_replica("dep_missing", generation=1, port=1, handle={})


def test_delete_removes_replicas(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    store = serving.deployments
    d = store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id=None, desired=2)
    keep = store.create(workspace_id=ws, name="keep", spec=SPEC, model_version_id=None, desired=1)
    store.add_replica(d.id, generation=1, port=40001, handle={})
    kept = store.add_replica(keep.id, generation=1, port=40002, handle={})
    store.delete(d.id)
    store.delete(d.id)  # idempotent
    with pytest.raises(NotFoundError):
        store.get_any(d.id)
    assert store.replicas(d.id) == []
    assert [r.id for r in store.replicas(keep.id)] == [kept.id]
    # The name is free again.
    again = store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id=None, desired=1)
    assert again.generation == 1


def test_deployments_need_a_workspace(store: MetadataStore) -> None:
    with pytest.raises(NotFoundError):
        store.deployments.create(
            workspace_id="ws_missing", name="x", spec={}, model_version_id=None, desired=1
        )


def test_set_status_compare_and_set(serving: Serving) -> None:
    ws = serving.workspace("alpha")
    store = serving.deployments
    d = store.create(workspace_id=ws, name="digits", spec=SPEC, model_version_id=None, desired=1)
    live = [DeploymentStatus.PENDING, DeploymentStatus.READY]
    assert store.set_status(d.id, DeploymentStatus.READY, expect=live).status == DeploymentStatus.READY
    store.set_status(d.id, DeploymentStatus.DELETING)
    kept = store.set_status(d.id, DeploymentStatus.READY, "x", expect=live)
    assert (kept.status, kept.message) == (DeploymentStatus.DELETING, None)  # left alone
    assert store.get_any(d.id).status == DeploymentStatus.DELETING
    with pytest.raises(NotFoundError):
        store.set_status("dep_missing", DeploymentStatus.READY, expect=live)
