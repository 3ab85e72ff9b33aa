"""The SQL metadata store, against a real SQLite file and a real PostgreSQL database.

Every test taking ``store`` or ``store_url`` runs once per backend.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from aicloud.entities import DatasetVersion, JobKind, JobStatus, Role, VersionStatus
from aicloud.errors import ConflictError, NotFoundError, StoreSchemaError, UnavailableError
from aicloud.store import MetadataStore, open_store
from aicloud.store.sql import migrate
from aicloud.store.sql.session import create_db_engine
from aicloud.store.sql.tables import Base

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    create_versions_in_subprocess,
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
    version_fields,
)


def _is_utc(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == timedelta(0)


# --- workspaces -------------------------------------------------------------------------


def test_workspace_crud(store: MetadataStore) -> None:
    beta = store.workspaces.create("beta")
    alpha = store.workspaces.create("alpha")

    assert beta.id.startswith("ws_") and len(beta.id) == 23
    assert alpha.id != beta.id
    assert _is_utc(beta.created_at)
    assert store.workspaces.get(beta.id) == beta
    assert store.workspaces.get_by_name("alpha") == alpha
    assert store.workspaces.get_by_name("gamma") is None
    assert store.workspaces.list() == [alpha, beta]  # by name


def test_workspace_errors(store: MetadataStore) -> None:
    store.workspaces.create("alpha")
    with pytest.raises(ConflictError, match="workspace 'alpha' already exists"):
        store.workspaces.create("alpha")
    with pytest.raises(NotFoundError, match="workspace 'ws_missing' does not exist"):
        store.workspaces.get("ws_missing")
    assert len(store.workspaces.list()) == 1


# --- tokens -----------------------------------------------------------------------------


def test_token_crud(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    other = store.workspaces.create("beta")
    expires = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    admin = store.tokens.create(
        token_id="tok_admin", workspace_id=ws.id, name="root", role=Role.ADMIN, secret_hash="h1"
    )
    job = store.tokens.create(
        token_id="tok_job",
        workspace_id=ws.id,
        name="job",
        role=Role.MEMBER,
        secret_hash="h2",
        scope="job:job_123",
        expires_at=expires.astimezone(timezone(timedelta(hours=2))),  # stored as UTC
    )
    store.tokens.create(
        token_id="tok_other", workspace_id=other.id, name="o", role=Role.VIEWER, secret_hash="h"
    )

    assert admin.role is Role.ADMIN and admin.scope is None and admin.expires_at is None
    assert store.tokens.get("tok_admin") == admin
    fetched = store.tokens.get("tok_job")
    assert fetched == job
    assert fetched is not None and fetched.role is Role.MEMBER and fetched.scope == "job:job_123"
    assert fetched.expires_at == expires and _is_utc(fetched.expires_at) and _is_utc(fetched.created_at)
    assert store.tokens.get("tok_missing") is None
    assert [t.id for t in store.tokens.list(ws.id)] == ["tok_admin", "tok_job"]  # oldest first

    with pytest.raises(NotFoundError):
        store.tokens.delete(ws.id, "tok_other")  # exists, but in another workspace
    store.tokens.delete(ws.id, "tok_admin")
    assert store.tokens.get("tok_admin") is None
    with pytest.raises(NotFoundError, match="token 'tok_admin' does not exist"):
        store.tokens.delete(ws.id, "tok_admin")
    assert [t.id for t in store.tokens.list(ws.id)] == ["tok_job"]
    assert [t.id for t in store.tokens.list(other.id)] == ["tok_other"]


def test_token_errors(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    store.tokens.create(token_id="tok_1", workspace_id=ws.id, name="a", role=Role.ADMIN, secret_hash="h")
    with pytest.raises(ConflictError):
        store.tokens.create(token_id="tok_1", workspace_id=ws.id, name="b", role=Role.ADMIN, secret_hash="h")
    with pytest.raises(NotFoundError, match="workspace 'ws_missing'"):
        store.tokens.create(
            token_id="tok_2", workspace_id="ws_missing", name="a", role=Role.ADMIN, secret_hash="h"
        )


def test_token_names_are_unique_per_workspace(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    other = store.workspaces.create("beta")
    store.tokens.create(token_id="tok_1", workspace_id=ws.id, name="ci", role=Role.ADMIN, secret_hash="h")
    with pytest.raises(ConflictError, match="a token named 'ci' already exists in this workspace") as excinfo:
        store.tokens.create(
            token_id="tok_2", workspace_id=ws.id, name="ci", role=Role.VIEWER, secret_hash="h"
        )
    assert excinfo.value.details == {"name": "ci"}
    store.tokens.create(token_id="tok_3", workspace_id=other.id, name="ci", role=Role.ADMIN, secret_hash="h")
    store.tokens.delete(ws.id, "tok_1")  # a deleted token's name is free again
    store.tokens.create(token_id="tok_4", workspace_id=ws.id, name="ci", role=Role.ADMIN, secret_hash="h")


def test_concurrent_token_creates_with_one_name_have_one_winner(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    barrier = threading.Barrier(10)

    def create(i: int) -> str:
        barrier.wait(timeout=30)
        try:
            store.tokens.create(
                token_id=f"tok_{i}", workspace_id=ws.id, name="race", role=Role.VIEWER, secret_hash="h"
            )
            return "created"
        except ConflictError:
            return "conflict"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(create, range(10)))
    assert sorted(outcomes) == ["conflict"] * 9 + ["created"]
    assert [t.name for t in store.tokens.list(ws.id)] == ["race"]


# --- datasets ---------------------------------------------------------------------------


def test_dataset_versions_are_numbered(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    v1 = store.datasets.create_version(workspace_id=ws.id, **version_fields())
    v2 = store.datasets.create_version(
        workspace_id=ws.id,
        **version_fields(blob_digest="b" * 64, num_rows=151, lineage={"parent": v1.id, "op": "clean"}),
    )

    assert (v1.version, v2.version) == (1, 2)
    assert v1.id.startswith("dsv_") and v1.id != v2.id
    assert v1.name == "iris" and v1.workspace_id == ws.id
    assert v1.status is VersionStatus.READY and v1.lineage == {} and v1.sha256 == "a" * 64
    assert v2.lineage == {"parent": v1.id, "op": "clean"}
    assert _is_utc(v1.created_at)

    assert store.datasets.get_version(ws.id, "iris") == v2  # latest
    assert store.datasets.get_version(ws.id, "iris", 1) == v1
    assert store.datasets.get_version_by_id(ws.id, v1.id) == v1
    assert store.datasets.list_versions(ws.id, "iris") == [v1, v2]  # oldest first


def test_dataset_version_round_trips_every_field(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    fields = version_fields(
        size_bytes=12 * 1024**3,  # bigger than 32 bits
        num_rows=3_000_000_000,
        stats={"x": {"mean": None, "std": float("nan"), "top": ["a", "b"]}, "y": {}},
        schema=[{"name": "x", "dtype": "float64", "nullable": True}],
        lineage={"sources": [{"dataset": "raw", "version": 3}], "params": None},
    )
    created = store.datasets.create_version(workspace_id=ws.id, **fields)
    read = store.datasets.get_version(ws.id, "iris", 1)

    assert read == created
    assert read.size_bytes == 12 * 1024**3 and read.num_rows == 3_000_000_000
    assert read.stats == {"x": {"mean": None, "std": None, "top": ["a", "b"]}, "y": {}}  # NaN → null
    assert read.schema == fields["schema"]
    assert read.lineage == fields["lineage"]


def test_list_datasets(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    assert store.datasets.list_datasets(ws.id) == []
    for name in ["wine", "iris", "wine", "adult", "wine"]:
        store.datasets.create_version(workspace_id=ws.id, **version_fields(name=name))

    summaries = store.datasets.list_datasets(ws.id)
    assert [(s.name, s.latest_version, s.num_versions) for s in summaries] == [
        ("adult", 1, 1),
        ("iris", 1, 1),
        ("wine", 3, 3),
    ]
    wine = summaries[2]
    assert _is_utc(wine.created_at) and _is_utc(wine.updated_at)
    assert wine.updated_at >= wine.created_at
    assert wine.updated_at == store.datasets.get_version(ws.id, "wine").created_at


def test_dataset_not_found(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    store.datasets.create_version(workspace_id=ws.id, **version_fields())

    with pytest.raises(NotFoundError, match="dataset 'wine' does not exist"):
        store.datasets.get_version(ws.id, "wine")
    with pytest.raises(NotFoundError, match="dataset 'iris' has no version 7") as excinfo:
        store.datasets.get_version(ws.id, "iris", 7)
    assert excinfo.value.details == {"kind": "dataset version", "name": "iris", "version": 7}
    with pytest.raises(NotFoundError, match="dataset 'wine' does not exist"):
        store.datasets.list_versions(ws.id, "wine")
    with pytest.raises(NotFoundError, match="dataset version 'dsv_missing' does not exist"):
        store.datasets.get_version_by_id(ws.id, "dsv_missing")
    with pytest.raises(NotFoundError, match="dataset 'wine' does not exist"):
        store.datasets.delete_dataset(ws.id, "wine")
    with pytest.raises(NotFoundError, match="workspace 'ws_missing' does not exist"):
        store.datasets.create_version(workspace_id="ws_missing", **version_fields())


def test_datasets_are_isolated_by_workspace(store: MetadataStore) -> None:
    alpha = store.workspaces.create("alpha")
    beta = store.workspaces.create("beta")
    a1 = store.datasets.create_version(workspace_id=alpha.id, **version_fields())
    a2 = store.datasets.create_version(workspace_id=alpha.id, **version_fields())
    b1 = store.datasets.create_version(workspace_id=beta.id, **version_fields())

    assert (a1.version, a2.version, b1.version) == (1, 2, 1)  # numbering is per workspace
    assert store.datasets.get_version(beta.id, "iris") == b1
    assert [v.id for v in store.datasets.list_versions(beta.id, "iris")] == [b1.id]
    assert [s.num_versions for s in store.datasets.list_datasets(beta.id)] == [1]

    # A version of another workspace looks exactly like a missing one.
    with pytest.raises(NotFoundError) as foreign:
        store.datasets.get_version_by_id(beta.id, a1.id)
    with pytest.raises(NotFoundError) as missing:
        store.datasets.get_version_by_id(beta.id, "dsv_" + "0" * 20)
    assert foreign.value.message.replace(a1.id, "ID") == missing.value.message.replace(
        "dsv_" + "0" * 20, "ID"
    )
    assert foreign.value.details == {"kind": "dataset version", "name": a1.id}

    gamma = store.workspaces.create("gamma")
    with pytest.raises(NotFoundError, match="dataset 'iris' does not exist"):
        store.datasets.get_version(gamma.id, "iris")
    with pytest.raises(NotFoundError, match="dataset 'iris' does not exist"):
        store.datasets.delete_dataset(gamma.id, "iris")
    assert store.datasets.list_datasets(gamma.id) == []


def test_delete_dataset_returns_unreferenced_digests(store: MetadataStore) -> None:
    alpha = store.workspaces.create("alpha")
    beta = store.workspaces.create("beta")
    shared, only_iris, only_wine = "5" * 64, "1" * 64, "2" * 64
    for digest in [shared, only_iris, only_iris]:
        store.datasets.create_version(workspace_id=alpha.id, **version_fields(blob_digest=digest))
    store.datasets.create_version(workspace_id=beta.id, **version_fields(name="wine", blob_digest=shared))
    store.datasets.create_version(workspace_id=beta.id, **version_fields(name="wine", blob_digest=only_wine))

    assert store.blob_refs.in_use(only_iris)
    assert store.datasets.delete_dataset(alpha.id, "iris") == [only_iris]  # shared is still used by wine
    assert not store.blob_refs.in_use(only_iris)
    assert store.blob_refs.in_use(shared)
    with pytest.raises(NotFoundError):
        store.datasets.list_versions(alpha.id, "iris")
    assert store.datasets.list_datasets(alpha.id) == []

    assert store.datasets.delete_dataset(beta.id, "wine") == sorted([shared, only_wine])
    assert not store.blob_refs.in_use(shared)

    # A re-created dataset starts from version 1 again.
    again = store.datasets.create_version(workspace_id=alpha.id, **version_fields())
    assert again.version == 1


def test_delete_dataset_keeps_blobs_any_other_reference_holds(store: MetadataStore) -> None:
    """Workspace A holds six blobs through six kinds of owner; workspace B stores the same bytes
    as a dataset and deletes it: only B's own blob comes back as unreferenced."""
    a = store.workspaces.create("alpha")
    b = store.workspaces.create("beta")
    upload, model_file, code, log, checkpoint, service, own = (c * 64 for c in "1234567")
    store.blob_refs.add(a.id, upload)  # POST /blobs
    store.models.create_version(
        workspace_id=a.id,
        name="digits",
        files={"model.safetensors": model_file},
        signature={},
        config={},
        metrics={},
        lineage={},
    )
    job = store.jobs.create(
        workspace_id=a.id, name="j", kind=JobKind.COMMAND, spec={"command": "true", "code": code}
    )
    store.jobs.update(job.id, checkpoint={"digest": checkpoint, "epoch": 1})
    assert store.jobs.transition(job.id, expect=[JobStatus.PENDING], status=JobStatus.FAILED, log_digest=log)
    deployment = store.deployments.create(
        workspace_id=a.id,
        name="svc",
        spec={"service": {"code": service, "entrypoint": "svc:Service"}},
        model_version_id=None,
        desired=1,
    )
    held = [upload, model_file, code, log, checkpoint, service]
    for digest in held:
        assert store.blob_refs.owns(a.id, digest) and not store.blob_refs.owns(b.id, digest)

    for digest in [*held, own]:
        store.datasets.create_version(workspace_id=b.id, **version_fields(name="copy", blob_digest=digest))
    assert all(store.blob_refs.owns(b.id, digest) for digest in held)
    assert store.datasets.delete_dataset(b.id, "copy") == [own]
    for digest in held:
        assert store.blob_refs.owns(a.id, digest) and not store.blob_refs.owns(b.id, digest)
    assert not store.blob_refs.in_use(own)

    # a deployment references only its current code, and nothing once deleted
    store.deployments.update_spec(a.id, "svc", {"service": {"code": own, "entrypoint": "x:Y"}}, None)
    assert not store.blob_refs.owns(a.id, service) and store.blob_refs.owns(a.id, own)
    store.deployments.delete(deployment.id)
    assert not store.blob_refs.in_use(own)


def test_concurrent_versions_from_threads(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    n = 20
    barrier = threading.Barrier(n)

    def upload(i: int) -> DatasetVersion:
        barrier.wait(timeout=30)
        return store.datasets.create_version(
            workspace_id=ws.id, **version_fields(name="race", blob_digest=f"{i:064x}")
        )

    with ThreadPoolExecutor(max_workers=n) as pool:
        created = list(pool.map(upload, range(n)))

    assert sorted(v.version for v in created) == list(range(1, n + 1))
    listed = store.datasets.list_versions(ws.id, "race")
    assert [v.version for v in listed] == list(range(1, n + 1))
    assert {v.id for v in listed} == {v.id for v in created}
    assert [(s.latest_version, s.num_versions) for s in store.datasets.list_datasets(ws.id)] == [(n, n)]


@pytest.mark.timeout(240)
def test_concurrent_versions_from_processes_on_sqlite(sqlite_url: str) -> None:
    """Server and CLI processes share one SQLite file: first opens migrate at once, then all write."""
    processes, per_process = 4, 5
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [
        ctx.Process(target=create_versions_in_subprocess, args=(sqlite_url, per_process, start))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=180)
    assert [worker.exitcode for worker in workers] == [0] * processes

    store = open_store(sqlite_url, migrate=False)
    try:
        ws = store.workspaces.get_by_name("procs")
        assert ws is not None
        versions = store.datasets.list_versions(ws.id, "shared")
        assert [v.version for v in versions] == list(range(1, processes * per_process + 1))
        assert len({v.blob_digest for v in versions}) == processes * per_process
    finally:
        store.close()


def test_in_memory_sqlite_store_is_shared_between_threads() -> None:
    store = open_store("sqlite://")
    try:
        ws = store.workspaces.create("alpha")
        with ThreadPoolExecutor(max_workers=8) as pool:
            created = list(
                pool.map(
                    lambda i: store.datasets.create_version(workspace_id=ws.id, **version_fields()), range(8)
                )
            )
        assert sorted(v.version for v in created) == list(range(1, 9))
    finally:
        store.close()


# --- secrets ----------------------------------------------------------------------------


def test_secret_crud(store: MetadataStore) -> None:
    alpha = store.workspaces.create("alpha")
    beta = store.workspaces.create("beta")
    token = store.secrets.create(alpha.id, "TOKEN", b"\x00sealed\xff")
    api = store.secrets.create(alpha.id, "API_KEY", b"sealed-api")
    other = store.secrets.create(beta.id, "TOKEN", b"beta")  # same name, other workspace: fine

    assert token.id.startswith("sec_") and len({token.id, api.id, other.id}) == 3
    assert token.ciphertext == b"\x00sealed\xff" and _is_utc(token.created_at)
    assert store.secrets.get(alpha.id, "TOKEN") == token
    assert store.secrets.get(alpha.id, "TOKEN").ciphertext == b"\x00sealed\xff"
    assert store.secrets.get(beta.id, "TOKEN").ciphertext == b"beta"

    listed = store.secrets.list(alpha.id)
    assert [s.name for s in listed] == ["API_KEY", "TOKEN"]  # by name
    assert all(s.ciphertext == b"" for s in listed)
    assert [s.id for s in listed] == [api.id, token.id]

    store.secrets.delete(alpha.id, "TOKEN")
    with pytest.raises(NotFoundError, match="secret 'TOKEN' does not exist"):
        store.secrets.get(alpha.id, "TOKEN")
    with pytest.raises(NotFoundError):
        store.secrets.delete(alpha.id, "TOKEN")
    assert store.secrets.get(beta.id, "TOKEN") == other


def test_secret_conflict(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    store.secrets.create(ws.id, "TOKEN", b"one")
    with pytest.raises(ConflictError) as excinfo:
        store.secrets.create(ws.id, "TOKEN", b"two")
    assert excinfo.value.message == "secret 'TOKEN' already exists in this workspace"
    assert store.secrets.get(ws.id, "TOKEN").ciphertext == b"one"
    with pytest.raises(NotFoundError, match="workspace 'ws_missing'"):
        store.secrets.create("ws_missing", "TOKEN", b"x")


def test_secret_rotation(store: MetadataStore) -> None:
    alpha = store.workspaces.create("alpha")
    beta = store.workspaces.create("beta")
    a = store.secrets.create(alpha.id, "A", b"old-a")
    b = store.secrets.create(beta.id, "B", b"old-b")

    assert sorted(store.secrets.all_ciphertexts()) == sorted([(a.id, b"old-a"), (b.id, b"old-b")])
    for secret_id, ciphertext in store.secrets.all_ciphertexts():
        store.secrets.replace_ciphertext(secret_id, b"new-" + ciphertext)
    assert store.secrets.get(alpha.id, "A").ciphertext == b"new-old-a"
    assert store.secrets.get(beta.id, "B").ciphertext == b"new-old-b"
    with pytest.raises(NotFoundError):
        store.secrets.replace_ciphertext("sec_missing", b"x")


# --- migrations -------------------------------------------------------------------------


def test_migrations_are_idempotent(store_url: str) -> None:
    head = migrate.head_revision()
    assert migrate.current_revision(store_url) is None
    migrate.upgrade(store_url)
    migrate.upgrade(store_url)
    assert migrate.current_revision(store_url) == head
    migrate.check_schema(store_url)
    open_store(store_url).close()  # migrate=True on a current database is a no-op
    store = open_store(store_url, migrate=False)
    try:
        assert store.workspaces.list() == []
    finally:
        store.close()


def test_check_schema_on_empty_database(store_url: str) -> None:
    with pytest.raises(StoreSchemaError) as excinfo:
        open_store(store_url, migrate=False)
    message = excinfo.value.message
    assert "is at revision none" in message
    assert f"aicloud needs {migrate.head_revision()}" in message
    assert "run `aicloud admin migrate`" in message
    with pytest.raises(StoreSchemaError):
        migrate.check_schema(store_url)


@pytest.mark.postgres
def test_check_schema_hides_the_password(postgres_url: str) -> None:
    with_password = make_url(postgres_url).set(password="hunter2").render_as_string(hide_password=False)
    with pytest.raises(StoreSchemaError) as excinfo:
        migrate.check_schema(with_password)  # trust auth: the password is ignored
    assert "hunter2" not in excinfo.value.message
    assert "***" in excinfo.value.message


def test_concurrent_upgrades(store_url: str) -> None:
    """Two servers starting at once both migrate: neither may crash."""
    n = 4
    barrier = threading.Barrier(n)

    def upgrade(_: int) -> None:
        barrier.wait(timeout=30)
        migrate.upgrade(store_url)

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(upgrade, range(n)))
    assert migrate.current_revision(store_url) == migrate.head_revision()


def test_unreachable_database_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="cannot open the metadata database at postgresql"):
        open_store("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/nowhere?connect_timeout=5")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UnavailableError, match="cannot open the metadata database at sqlite"):
        open_store(f"sqlite:///{tmp_path / 'file' / 'aicloud.db'}")


def test_migrations_match_the_tables(store_url: str) -> None:
    migrate.upgrade(store_url)
    engine = create_db_engine(store_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
