"""The replica usage history (migration 0012) on SQLite and PostgreSQL: a replica's row keeps
what it reserved and its start; retiring it, deleting its deployment, or losing it ends it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete

from aicloud.store import MetadataStore, open_store
from aicloud.store.sql.session import create_db_engine
from aicloud.store.sql.tables import ReplicaRow

from store_fixtures import postgres_url_fixture, sqlite_url_fixture  # noqa: F401  (fixtures)

SPEC = {"model": "m@1", "min_replicas": 1, "cpus": 2, "gpus": 1, "limits": {"memory_mb": 512}}


@pytest.fixture(name="meta", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def meta_fixture(request: pytest.FixtureRequest) -> Iterator[MetadataStore]:
    url = str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))
    store = open_store(url)
    store.url_for_tests = url  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.close()


def test_replica_usage_records_start_reservation_and_end(meta: MetadataStore) -> None:
    ws, other = meta.workspaces.create("alpha").id, meta.workspaces.create("beta").id
    deps = meta.deployments
    d = deps.create(workspace_id=ws, name="svc", spec=SPEC, model_version_id=None, desired=1)
    plain = deps.create(
        workspace_id=ws, name="plain", spec={"model": "m@1"}, model_version_id=None, desired=1
    )
    r1 = deps.add_replica(d.id, generation=1, port=9001, handle={})
    r2 = deps.add_replica(d.id, generation=1, port=9002, handle={})
    r3 = deps.add_replica(plain.id, generation=1, port=9003, handle={})
    rows = {r["replica_id"]: r for r in deps.replica_usage(ws)}
    assert set(rows) == {r1.id, r2.id, r3.id} and deps.replica_usage(other) == []
    first = rows[r1.id]
    assert (first["deployment"], first["cpus"], first["gpus"], first["memory_mb"]) == ("svc", 2, 1, 512)
    assert first["started_at"] == r1.created_at and first["ended_at"] is None
    assert (rows[r3.id]["cpus"], rows[r3.id]["gpus"], rows[r3.id]["memory_mb"]) == (1, 0, None)

    deps.remove_replica(r1.id)  # retired
    ended = {r["replica_id"]: r["ended_at"] for r in deps.replica_usage(ws)}
    assert ended[r1.id] is not None and ended[r1.id] >= r1.created_at and ended[r2.id] is None
    deps.delete(d.id)  # the deployment goes: its replicas end, their history stays
    ended = {r["replica_id"]: r["ended_at"] for r in deps.replica_usage(ws)}
    assert ended[r2.id] is not None and ended[r1.id] is not None and ended[r3.id] is None

    # a replica row that vanished without being retired (a server that stopped) ends at the next read
    engine = create_db_engine(meta.url_for_tests)  # type: ignore[attr-defined]
    try:
        with engine.begin() as connection:
            connection.execute(delete(ReplicaRow).where(ReplicaRow.id == r3.id))
    finally:
        engine.dispose()
    assert all(r["ended_at"] is not None for r in deps.replica_usage(ws))

    # the period: replicas that ran in it only
    future = datetime.now(UTC) + timedelta(days=1)
    assert deps.replica_usage(ws, since=future) == []
    assert deps.replica_usage(ws, until=r1.created_at - timedelta(seconds=1)) == []
    assert len(deps.replica_usage(ws, until=future)) == 3


def test_held_blobs_with_when_first_held(meta: MetadataStore) -> None:
    ws, other = meta.workspaces.create("alpha").id, meta.workspaces.create("beta").id
    meta.blob_refs.add(ws, "a" * 64)
    meta.blob_refs.add(ws, "a" * 64, owner_id="again")
    meta.blob_refs.add(other, "b" * 64)
    held = meta.blob_refs.held(ws)
    assert [d for d, _ in held] == ["a" * 64] and isinstance(held[0][1], datetime)
    assert [d for d, _ in meta.blob_refs.held(other)] == ["b" * 64]
