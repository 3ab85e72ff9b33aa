"""Hostile names, versions and refs against the real server: every one is a 4xx in the error shape.

A name validated with ``re.match`` and ``$`` let ``"name\\n"`` through (``$`` matches before a final
newline); ``str.isdigit()`` accepts ``³``, which ``int()`` refuses (a 500).
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import assert_error, small_csv

NL = "%0A"  # a newline, percent-encoded in a path


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def dataset(member: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = _name("sec-ds")
    path = small_csv(tmp_path_factory.mktemp("sec") / "small.csv")
    r = member.post(
        f"/api/v1/datasets/{name}/versions", params={"filename": "small.csv"}, content=path.read_bytes()
    )
    assert r.status_code == 201, r.text
    return name


@pytest.fixture(scope="module")
def blob(member: httpx.Client) -> str:
    data = f'{{"marker": "{uuid.uuid4().hex}"}}'.encode()
    r = member.post("/api/v1/blobs", content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["digest"] == hashlib.sha256(data).hexdigest()
    return str(r.json()["digest"])


@pytest.fixture(scope="module")
def model(member: httpx.Client, blob: str) -> str:
    name = _name("sec-model")
    r = member.post(f"/api/v1/models/{name}/versions", json={"files": {"config.json": blob}})
    assert r.status_code == 201, r.text
    return name


def _train(dataset: str, **extra: Any) -> dict[str, Any]:
    return {"task": "tabular-classification", "dataset": dataset, "eval_dataset": dataset, **extra}


# --- 1. names ending in a newline -------------------------------------------------------------


def test_newline_suffixed_workspace_name_is_refused(http: httpx.Client) -> None:
    """Only an admin of ``default`` creates workspaces: the admin token, not the probe's."""
    assert_error(http.post("/api/v1/workspaces", json={"name": _name("ws") + "\n"}), 422, "validation_error")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/secrets", {"name": "SECRET\n", "value": "x"}),
        ("POST", "/api/v1/jobs", {"kind": "command", "name": "job\n", "spec": {"command": "true"}}),
        ("POST", "/api/v1/jobs", {"kind": "command", "spec": {"command": "true", "env": {"VAR\n": "1"}}}),
        ("POST", "/api/v1/deployments", {"name": "dep\n", "model": "anything"}),
    ],
    ids=["secret", "job", "job-env", "deployment"],
)
def test_newline_suffixed_names_in_bodies_are_refused(
    member: httpx.Client, method: str, path: str, body: dict[str, Any]
) -> None:
    assert_error(member.request(method, path, json=body), 422, "validation_error")


def test_newline_suffixed_token_name_is_refused(ws_admin: httpx.Client) -> None:
    r = ws_admin.post("/api/v1/tokens", json={"name": "tok\n", "role": "viewer"})
    assert_error(r, 422, "validation_error")


def test_newline_suffixed_dataset_name_is_refused(member: httpx.Client, tmp_path: Path) -> None:
    data = small_csv(tmp_path / "d.csv").read_bytes()
    r = member.post(
        f"/api/v1/datasets/{_name('ds')}{NL}/versions", params={"filename": "d.csv"}, content=data
    )
    assert_error(r, 422, "validation_error")


def test_newline_suffixed_names_of_jobs_on_a_dataset_are_refused(member: httpx.Client, dataset: str) -> None:
    """Train jobs, their model names, sweeps and a command job's dataset roles."""
    bodies = [
        {"kind": "train", "name": "train\n", "spec": _train(dataset)},
        {"kind": "train", "spec": _train(dataset, model_name="model\n")},
        {
            "kind": "sweep",
            "name": "sweep\n",
            "spec": {
                "train": _train(dataset),
                "space": {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
            },
        },
        {"kind": "command", "spec": {"command": "true", "datasets": {"role\n": dataset}}},
    ]
    for body in bodies:
        assert_error(member.post("/api/v1/jobs", json=body), 422, "validation_error")


def test_newline_suffixed_model_names_and_aliases_are_refused(
    member: httpx.Client, blob: str, model: str
) -> None:
    body = {"files": {"config.json": blob}}
    assert_error(member.post(f"/api/v1/models/{_name('m')}{NL}/versions", json=body), 422, "validation_error")
    body = {"files": {"config.json": blob, "weights.bin\n": blob}}
    assert_error(member.post(f"/api/v1/models/{_name('m')}/versions", json=body), 422, "validation_error")
    r = member.put(f"/api/v1/models/{model}/aliases/prod{NL}", json={"version": 1})
    assert_error(r, 422, "validation_error")


def test_a_newline_after_an_id_does_not_pass(member: httpx.Client) -> None:
    assert_error(member.get(f"/api/v1/jobs/job_0123456789abcdef{NL}"), 422, "validation_error")
    assert_error(member.get(f"/api/v1/runs/run_0123456789abcdef{NL}"), 422, "validation_error")


# --- 6. versions that str.isdigit() accepts and int() refuses ----------------------------------

SUPERSCRIPT_3 = "%C2%B3"  # "³"


def test_unicode_digit_versions_are_4xx(member: httpx.Client, dataset: str, model: str) -> None:
    for path in (
        f"/api/v1/datasets/{dataset}/versions/{SUPERSCRIPT_3}",
        f"/api/v1/datasets/{dataset}/versions/{SUPERSCRIPT_3}/content",
        f"/api/v1/models/{model}/versions/{SUPERSCRIPT_3}",
        f"/api/v1/datasets/{dataset}/versions/{'9' * 5000}",  # past int()'s 4300-digit limit
    ):
        r = member.get(path)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert_error(r, r.status_code)
    r = member.post(f"/api/v1/datasets/{dataset}/versions/{SUPERSCRIPT_3}/split", json={})
    assert_error(r, 422, "validation_error")


def test_unicode_digit_versions_in_refs_are_4xx(member: httpx.Client, dataset: str, model: str) -> None:
    r = member.post("/api/v1/jobs", json={"kind": "train", "spec": _train(f"{dataset}:³")})
    assert_error(r, 422, "validation_error")
    r = member.post("/api/v1/deployments", json={"name": _name("dep"), "model": f"{model}:³"})
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code)


# --- 3. nesting and integer limits of the control plane's own JSON ------------------------------


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [100, 500, 50_000])
def test_deeply_nested_json_is_a_4xx_naming_the_limit(member: httpx.Client, depth: int) -> None:
    """Below json.loads' own limit a free-form field refuses it (422); past it the parse does (400)."""
    headers = {"Content-Type": "application/json"}
    run = member.post("/api/v1/runs", json={"name": "deep"}).json()["id"]
    for path, body in (
        ("/api/v1/runs", b'{"name": "d", "params": {"a": ' + _nested(depth) + b"}}"),
        (f"/api/v1/runs/{run}/params", b'{"params": {"a": ' + _nested(depth) + b"}}"),
        ("/api/v1/jobs", b'{"kind": "command", "spec": {"command": "true", "x": ' + _nested(depth) + b"}}"),
    ):
        r = member.post(path, content=body, headers=headers)
        err = assert_error(r, 422 if depth < 1000 else 400)
        assert "64 levels" in err["message"], (path, err)
    nested_ok = {"a": [[[[1]]]]}
    assert member.post(f"/api/v1/runs/{run}/params", json={"params": nested_ok}).status_code == 200


def test_integers_past_their_column_are_422(member: httpx.Client, model: str) -> None:
    """A metric step past BIGINT was an OverflowError from the database driver: a 500 (the fuzzer's find)."""
    run = member.post("/api/v1/runs", json={"name": "ints"}).json()["id"]
    for point in (
        {"name": "loss", "step": 2**63, "value": 1.0},
        {"name": "loss", "step": 0, "value": 1.0, "timestamp": 1e300},
    ):
        r = member.post(f"/api/v1/runs/{run}/metrics", json={"points": [point]})
        assert_error(r, 422, "validation_error")
    r = member.put(f"/api/v1/models/{model}/aliases/prod", json={"version": 2**31})
    assert_error(r, 422, "validation_error")
    ok = member.post(
        f"/api/v1/runs/{run}/metrics", json={"points": [{"name": "loss", "step": 2**62, "value": 1}]}
    )
    assert ok.status_code == 200, ok.text
