"""A deployment's config as a file (`aicloud deploy create/apply -f`) and as SDK keywords: env,
secrets, gpus, memory; through the real server, real replicas and the real CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_cli import run_cli

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error, small_csv

SERVICE = """
import os

from aicloud import Service, handler


class Env(Service):
    @handler
    def read(self, names: list[str]) -> dict:
        return {n: os.environ.get(n) for n in names}
"""


def _gone(client: Client, name: str) -> None:
    client.deployments.get(name).delete()
    deadline = time.monotonic() + 60
    while name in {d.name for d in client.deployments.list()} and time.monotonic() < deadline:
        time.sleep(0.3)


@pytest.fixture
def model(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> str:
    ds = client.datasets.create(unique("dcfg"), small_csv(tmp_path / "s.csv", rows=120))
    train, test = ds.split(train_size=0.75, seed=0, stratify="label")
    name = unique("dcfg-model")
    job = client.jobs.train(
        task="tabular-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params={"epochs": 1},
        model_name=name,
    )
    assert job.wait(timeout=180).status == "succeeded", job.logs()[-2000:]
    return name


def test_apply_a_file_twice_is_idempotent_then_a_change_rolls(
    server: ServerProcess, client: Client, model: str, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("dcfg-apply")
    file = tmp_path / "deploy.yaml"
    file.write_text(f"name: {name}\nmodel: {model}:1\nmin_replicas: 1\nmax_replicas: 2\nmemory: 1Gi\n")
    first = json.loads(run_cli(server, "deploy", "apply", "-f", str(file), "-o", "json").stdout)
    dep = client.deployments.get(name).wait_ready(timeout=120)
    assert first["spec"]["limits"]["memory_mb"] == 1024 and first["spec"]["max_replicas"] == 2
    before = dep.refresh().info
    again = json.loads(run_cli(server, "deploy", "apply", "-f", str(file), "-o", "json").stdout)
    assert again["generation"] == before.generation
    assert dep.refresh().info.updated_at == before.updated_at  # nothing was written
    assert [r.id for r in dep.refresh().info.replicas] == [r.id for r in before.replicas]
    assert len(dep.predict([[1, 0.5]])) == 1

    # a replica setting changes: the same command rolls to a new generation
    file.write_text(file.read_text() + "env: {GREETING: hello}\n")
    rolled = json.loads(run_cli(server, "deploy", "apply", "-f", str(file), "-o", "json").stdout)
    assert rolled["generation"] == before.generation + 1 and rolled["spec"]["env"] == {"GREETING": "hello"}
    _gone(client, name)


def test_a_service_sees_its_env_and_secrets(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    secret = unique("DCFG_SECRET").replace("-", "_")
    client.secrets.create(secret, "s3cr3t-value")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "env.py").write_text(SERVICE)
    name = unique("dcfg-env")
    dep = client.deployments.create(
        name,
        service=tmp_path / "svc",
        entrypoint="env.py:Env",
        env={"GREETING": "hello", "LEVEL": "3"},
        secrets=[secret],
    ).wait_ready(timeout=120)
    seen = dep.call("read", {"names": ["GREETING", "LEVEL", secret, "AICLOUD_MASTER_KEY"]})
    assert seen == {"GREETING": "hello", "LEVEL": "3", secret: "s3cr3t-value", "AICLOUD_MASTER_KEY": None}
    assert "s3cr3t-value" not in json.dumps(dep.info.spec)  # the spec holds the name only
    # the same spec applied again (the code packs to the same blob): nothing restarts
    again = client.deployments.apply(
        name,
        service=tmp_path / "svc",
        entrypoint="env.py:Env",
        env={"GREETING": "hello", "LEVEL": "3"},
        secrets=[secret],
    )
    assert again.info.generation == dep.info.generation
    _gone(client, name)


def test_a_service_from_a_file_with_flags_on_top(
    server: ServerProcess, client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "env.py").write_text(SERVICE)
    name = unique("dcfg-file")
    file = tmp_path / "deploy.yaml"
    file.write_text(
        f"name: {name}\nservice: svc\nentrypoint: env.py:Env\nenv:\n  PORT_HINT: 8080\n  DEBUG: true\n"
    )
    out = run_cli(server, "deploy", "create", "-f", str(file), "--env", "EXTRA=1", "-o", "json")
    assert json.loads(out.stdout)["spec"]["env"] == {"EXTRA": "1"}  # a flag given replaces the file's value
    seen = client.deployments.get(name).call("read", {"names": ["EXTRA", "PORT_HINT"]})
    assert seen == {"EXTRA": "1", "PORT_HINT": None}
    _gone(client, name)


def test_bad_files_and_specs_are_clear_errors(
    server: ServerProcess,
    client: Client,
    http: httpx.Client,
    model: str,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    file = tmp_path / "deploy.yaml"
    file.write_text(f"name: {unique('dcfg-bad')}\nmodel: {model}:1\nreplicas: 3\n")
    for command in ("apply", "create"):
        bad = run_cli(server, "deploy", command, "-f", str(file), check=False)
        assert bad.returncode == 2 and "'replicas'" in bad.stderr and "max_replicas" in bad.stderr
        assert "Traceback" not in bad.stderr
    file.write_text(f"name: {unique('dcfg-bad')}\nmodel: {model}:1\nsecrets: [NO_SUCH_SECRET]\n")
    bad = run_cli(server, "deploy", "apply", "-f", str(file), check=False)
    assert bad.returncode == 1 and "NO_SUCH_SECRET" in bad.stderr and "Traceback" not in bad.stderr

    err = assert_error(
        http.put(f"/api/v1/deployments/{unique('dcfg-bad')}", json={"model": model, "gpu": 1}), 422
    )
    assert "gpu" in err["message"]
    err = assert_error(
        http.post("/api/v1/deployments", json={"name": "x", "model": model, "memory": "lots"}), 422
    )
    assert "2Gi" in err["message"]
    err = assert_error(
        http.post("/api/v1/deployments", json={"name": "x", "model": model, "env": {"AICLOUD_TOKEN": "x"}}),
        422,
    )
    assert "AICLOUD_TOKEN" in err["message"]


def test_a_deployment_asking_for_more_gpus_than_the_machine_has_is_a_422(
    http: httpx.Client, model: str, unique: Callable[[str], str]
) -> None:
    from aicloud.executors.local import visible_gpus

    have = visible_gpus()
    body = {"name": unique("dcfg-gpu"), "model": f"{model}:1", "gpus": have + 1}
    err = assert_error(http.post("/api/v1/deployments", json=body), 422, "validation_error")
    assert f"this machine has {have}" in err["message"] and "gpus" in err["message"]
    spec = {k: v for k, v in body.items() if k != "name"}
    err = assert_error(http.put(f"/api/v1/deployments/{body['name']}", json=spec), 422, "validation_error")
    assert f"this machine has {have}" in err["message"]
