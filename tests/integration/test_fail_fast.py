"""Fail fast, say why: a replica that cannot start fails its deployment at once with the traceback
in the status and the logs; a wrong spec is a 422 naming the field; the CLI prints one red line for
a user's mistake, never a traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from test_cli import run_cli

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error

BROKEN_SETUP = """
from aicloud import Service, handler


class Broken(Service):
    def setup(self) -> None:
        print("loading the weights")
        raise RuntimeError("weights.bin is missing from the code folder")

    @handler
    def echo(self, text: str) -> str:
        return text
"""


def _no_traceback(proc_output: str) -> None:
    assert "Traceback" not in proc_output and 'File "' not in proc_output, proc_output


def test_a_service_whose_setup_raises_fails_the_deployment_at_once(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "broken.py").write_text(BROKEN_SETUP)
    started = time.monotonic()
    dep = client.deployments.create("ff-broken", service=tmp_path / "svc", entrypoint="broken.py:Broken")
    while dep.refresh().info.status.value != "failed" and time.monotonic() - started < 90:
        time.sleep(0.2)
    took = time.monotonic() - started
    info = dep.info
    assert info.status.value == "failed", info
    assert took < 30, f"{took:.1f} s: a deterministic start-up error is not retried"
    assert info.message is not None
    assert "RuntimeError: weights.bin is missing from the code folder" in info.message
    assert "not retried" in info.message and "aicloud deploy logs ff-broken" in info.message
    time.sleep(1.5)  # a few more passes: no second replica is started
    (failed,) = dep.refresh().info.replicas  # the failed replica's row stays, for its log
    assert failed.state.value == "failed"

    logs = dep.logs()
    assert list(logs) == [failed.id]
    assert "loading the weights" in logs[failed.id]
    assert "Traceback (most recent call last)" in logs[failed.id]
    assert "RuntimeError: weights.bin is missing" in logs[failed.id]

    shown = run_cli(server, "deploy", "show", "ff-broken")
    assert "failed" in shown.stdout and "weights.bin is missing" in shown.stdout
    assert "[aicloud replica] could not start: RuntimeError" in shown.stdout  # printed, not markup
    out = run_cli(server, "deploy", "logs", "ff-broken")
    assert f"replica {failed.id}" in out.stdout and "RuntimeError: weights.bin is missing" in out.stdout
    as_json = json.loads(run_cli(server, "deploy", "show", "ff-broken", "-o", "json").stdout)
    assert "weights.bin is missing" in as_json["message"]

    # a fixed spec (a new generation) starts again; deleting removes the failed row too
    dep.delete()
    deadline = time.monotonic() + 60
    while "ff-broken" in {d.name for d in client.deployments.list()} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "ff-broken" not in {d.name for d in client.deployments.list()}


def test_a_bad_entrypoint_fails_the_deployment_and_the_cli_says_why(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "app.py").write_text("import no_such_module_here\n")
    started = time.monotonic()
    out = run_cli(
        server, "deploy", "create", "ff-import", "--service", str(tmp_path / "svc"),
        "--entrypoint", "app.py:App", check=False,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ModuleNotFoundError" in out.stderr and "no_such_module_here" in out.stderr
    assert "aicloud/cli" not in out.stderr  # the replica's traceback lines, not the CLI's
    client.deployments.get("ff-import").delete()


def test_unknown_spec_fields_are_a_422_naming_them(http: httpx.Client) -> None:
    command = http.post("/api/v1/jobs", json={"kind": "command", "spec": {"command": "true", "cpu": 2}})
    err = assert_error(command, 422, "validation_error")
    assert err["details"][0]["field"] == "spec.cpu" and "unknown field" in err["message"]
    train = http.post("/api/v1/jobs", json={"kind": "train", "spec": {"task": "x", "epochs": 3}})
    assert "spec.epochs" in {d["field"] for d in assert_error(train, 422)["details"]}
    top = http.post("/api/v1/jobs", json={"kind": "command", "spec": {"command": "true"}, "priorty": 1})
    assert assert_error(top, 422)["details"][0]["field"] == "priorty"
    deploy = http.post("/api/v1/deployments", json={"name": "ff-typo", "model": "m", "min_replica": 0})
    assert assert_error(deploy, 422)["details"][0]["field"] == "min_replica"


def test_the_cli_prints_one_line_for_a_bad_job_file(server: ServerProcess, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("kind: command\nspec:\n  command: echo hi\n  cpu: 2\n")
    out = run_cli(server, "job", "run", "-f", str(typo), check=False)
    assert out.returncode == 1
    _no_traceback(out.stdout + out.stderr)
    assert "spec.cpu" in out.stderr and "unknown field" in out.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: command\nspec:\n  command: [echo\n")
    out = run_cli(server, "job", "run", "-f", str(broken), check=False)
    assert out.returncode == 2
    _no_traceback(out.stdout + out.stderr)
    assert "not valid YAML" in out.stderr and "line" in out.stderr

    top = tmp_path / "top.yaml"
    top.write_text("kind: command\nspecs:\n  command: echo hi\n")
    out = run_cli(server, "job", "run", "-f", str(top), check=False)
    assert out.returncode == 2 and "'specs'" in out.stderr
    _no_traceback(out.stdout + out.stderr)

    out = run_cli(server, "job", "run", "-f", str(tmp_path / "missing.yaml"), check=False)
    assert out.returncode == 2
    _no_traceback(out.stdout + out.stderr)

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("kind: sweep\npriority: high\nspec: {}\n")
    out = run_cli(server, "sweep", "create", "-f", str(sweep), check=False)
    assert out.returncode == 2 and "priority must be a whole number" in out.stderr
    _no_traceback(out.stdout + out.stderr)
