"""Blob ownership across workspaces (issue #17): one workspace must never delete or read another's files.

Blobs are content-addressed and shared, so workspace B can store the very bytes workspace A holds.
A's blob must survive whatever B does with its copy, and B reads a blob by digest only while B
itself holds a reference to it. ``http`` is the ``default`` workspace (A); ``ws_b`` the admin of a
fresh one (B).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from aicloud.testing.server import ServerProcess

from helpers import assert_error

RAW = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def ws_b(server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP as the admin of a second workspace."""
    created = httpx.post(
        f"{server.url}/api/v1/workspaces",
        json={"name": f"other-{uuid.uuid4().hex[:8]}"},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert created.status_code == 201, created.text
    token = created.json()["admin_token"]["token"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        yield c


def _csv() -> bytes:
    """Bytes that are also a valid CSV dataset, unique to the test."""
    return f"x,label\n1,{uuid.uuid4().hex}\n2,b\n".encode()


def _upload_dataset(client: httpx.Client, name: str, data: bytes, **params: str) -> httpx.Response:
    return client.post(
        f"/api/v1/datasets/{name}/versions", params={"filename": "copy.csv", **params}, content=data
    )


def _copy_then_delete(b: httpx.Client, data: bytes) -> None:
    """B stores ``data`` as a dataset of its own and deletes it."""
    name = f"copy-{uuid.uuid4().hex[:8]}"
    r = _upload_dataset(b, name, data)
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert b.delete(f"/api/v1/datasets/{name}").status_code == 204


def test_a_raw_blob_survives_another_workspace_deleting_a_dataset_of_the_same_bytes(
    http: httpx.Client, ws_b: httpx.Client
) -> None:
    """The probe's repro: A POSTs X to /blobs; B uploads X as a dataset and deletes it."""
    data = _csv()
    digest = http.post("/api/v1/blobs", content=data, headers=RAW).json()["digest"]
    _copy_then_delete(ws_b, data)
    r = http.get(f"/api/v1/blobs/{digest}")
    assert r.status_code == 200, r.text
    assert r.content == data


def test_a_failed_upload_of_the_same_bytes_deletes_nothing(http: httpx.Client, ws_b: httpx.Client) -> None:
    """B's upload of X that fails validation discards the stored file only if nothing references it."""
    data = _csv()
    digest = http.post("/api/v1/blobs", content=data, headers=RAW).json()["digest"]
    r = _upload_dataset(ws_b, f"bad-{uuid.uuid4().hex[:8]}", data, format="parquet")
    assert_error(r, 400)
    assert http.get(f"/api/v1/blobs/{digest}").content == data


def test_a_model_file_survives_another_workspace_deleting_the_same_bytes(
    http: httpx.Client, ws_b: httpx.Client
) -> None:
    data = _csv()
    digest = http.post("/api/v1/blobs", content=data, headers=RAW).json()["digest"]
    name = f"owned-{uuid.uuid4().hex[:8]}"
    r = http.post(f"/api/v1/models/{name}/versions", json={"files": {"config.json": digest}})
    assert r.status_code == 201, r.text
    _copy_then_delete(ws_b, data)
    version = http.get(f"/api/v1/models/{name}/versions/latest").json()
    assert version["files"] == {"config.json": digest}
    assert http.get(f"/api/v1/blobs/{digest}").content == data


def _finished_log(http: httpx.Client, job_id: str) -> bytes:
    """The job's whole log once it is stored as a blob (``X-Aicloud-Log-Complete: 1``)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = http.get(f"/api/v1/jobs/{job_id}/logs")
        assert r.status_code == 200, r.text
        if r.headers["X-Aicloud-Log-Complete"] == "1":
            return r.content
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never finished: {http.get(f'/api/v1/jobs/{job_id}').json()}")


def test_a_job_log_survives_another_workspace_storing_the_same_bytes(
    http: httpx.Client, ws_b: httpx.Client
) -> None:
    """A job log is referenced only by its job (never uploaded). B stores the same bytes as a
    dataset upload that fails validation; the file B's upload would discard is A's log."""
    marker = uuid.uuid4().hex
    job = http.post("/api/v1/jobs", json={"kind": "command", "spec": {"command": f"echo {marker}"}})
    assert job.status_code == 201, job.text
    log = _finished_log(http, job.json()["id"])
    assert marker.encode() in log
    digest = hashlib.sha256(log).hexdigest()
    assert http.get(f"/api/v1/blobs/{digest}").content == log  # the job's reference lets A read it
    assert_error(ws_b.get(f"/api/v1/blobs/{digest}"), 404, "not_found")

    r = _upload_dataset(ws_b, f"bad-{uuid.uuid4().hex[:8]}", log, format="parquet")
    assert_error(r, 400)
    assert _finished_log(http, job.json()["id"]) == log
    assert http.get(f"/api/v1/blobs/{digest}").content == log


def test_reading_a_blob_by_digest_needs_a_reference_from_the_callers_workspace(
    http: httpx.Client, ws_b: httpx.Client
) -> None:
    data = _csv()
    digest = http.post("/api/v1/blobs", content=data, headers=RAW).json()["digest"]
    missing = assert_error(ws_b.get(f"/api/v1/blobs/{'0' * 64}"), 404, "not_found")
    # knowing the digest is not access: B is answered exactly as for a blob that does not exist
    err = assert_error(ws_b.get(f"/api/v1/blobs/{digest}"), 404, "not_found")
    assert err["details"] == missing["details"]
    assert err["message"] == missing["message"].replace("0" * 64, digest)

    # B's own dataset of the same bytes is a reference of B's: B may read them while it lasts
    name = f"copy-{uuid.uuid4().hex[:8]}"
    assert _upload_dataset(ws_b, name, data).status_code == 201
    assert ws_b.get(f"/api/v1/blobs/{digest}").content == data
    assert ws_b.delete(f"/api/v1/datasets/{name}").status_code == 204
    assert_error(ws_b.get(f"/api/v1/blobs/{digest}"), 404, "not_found")
    assert http.get(f"/api/v1/blobs/{digest}").content == data


def test_concurrent_token_creates_with_one_name_have_one_winner(http: httpx.Client) -> None:
    """Ten creates of one name at once: exactly one 201, nine 409 ``conflict`` (a database
    constraint, not a check-then-insert)."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(10)

    def create(_: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return http.post("/api/v1/tokens", json={"name": name, "role": "viewer"})

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(create, range(10)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            err = assert_error(r, 409, "conflict")
            assert err["details"] == {"name": name}
    assert [t["name"] for t in http.get("/api/v1/tokens").json()].count(name) == 1
    # a later create of the same name is the same clean conflict
    assert_error(http.post("/api/v1/tokens", json={"name": name, "role": "viewer"}), 409, "conflict")
