"""`aicloud deploy` and `aicloud predict` as real subprocesses against a real server."""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_cli import run_cli

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import small_csv

SERVICE = """
from aicloud import Service, handler


class Echo(Service):
    def setup(self) -> None:
        self.prefix = "echo: "
        print("echo service set up")

    @handler
    def echo(self, text: str) -> str:
        return self.prefix + text

    @handler
    def boom(self, text: str) -> str:
        raise RuntimeError(f"no echo for {text}")
"""


def test_deploy_a_model_and_predict_from_the_cli(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    ds = client.datasets.create("cli-serve", small_csv(tmp_path / "s.csv", rows=120))
    train, test = ds.split(train_size=0.75, seed=0, stratify="label")
    job = client.jobs.train(
        task="tabular-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params={"epochs": 2},
        model_name="cli-serve",
    )
    assert job.wait(timeout=180).status == "succeeded"
    out = run_cli(server, "deploy", "create", "cli-serve", "--model", "cli-serve:1", "-o", "json")
    assert json.loads(out.stdout)["status"] == "ready"
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"inputs": [[1, 0.5], [2, 1.0]]}))
    predicted = json.loads(run_cli(server, "predict", "cli-serve", "--input", str(rows)).stdout)
    assert len(predicted["outputs"]) == 2 and all(o in (0, 1) for o in predicted["outputs"])
    listed = json.loads(run_cli(server, "deploy", "list", "-o", "json").stdout)
    assert "cli-serve" in {d["name"] for d in listed}
    run_cli(server, "deploy", "scale", "cli-serve", "--max", "2")
    shown = json.loads(run_cli(server, "deploy", "show", "cli-serve", "-o", "json").stdout)
    assert shown["spec"]["max_replicas"] == 2
    run_cli(server, "deploy", "delete", "cli-serve")
    deadline = time.monotonic() + 60
    while "cli-serve" in {d.name for d in client.deployments.list()} and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "cli-serve" not in {d.name for d in client.deployments.list()}


def test_deploy_a_service_class(server: ServerProcess, client: Client, tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "echo.py").write_text(SERVICE)
    dep = client.deployments.create(
        "cli-echo", service=tmp_path / "svc", entrypoint="echo.py:Echo"
    ).wait_ready()
    assert dep.call("echo", {"text": "hi"}) == "echo: hi"  # setup() ran once in the replica
    spec = client._transport.json("GET", "/v1/endpoints/cli-echo/openapi.json")
    assert "/echo" in spec["paths"]

    # a handler that raises: the caller gets a 500 that points at the logs, the logs have the why
    failed = client._transport.http.post("/v1/endpoints/cli-echo/boom", json={"text": "x"})
    assert failed.status_code == 500 and "aicloud deploy logs" in failed.json()["error"]["message"]
    (replica,) = [r.id for r in dep.refresh().info.replicas]
    logs = dep.logs()
    assert list(logs) == [replica]
    assert "echo service set up" in logs[replica]
    assert "RuntimeError: no echo for x" in logs[replica]  # the traceback, not only the message
    assert dep.logs(lines=1, replica=replica)[replica].count("\n") == 0
    out = run_cli(server, "deploy", "logs", "cli-echo", "--lines", "500")
    assert f"replica {replica}" in out.stdout and "echo service set up" in out.stdout
    missing = client._transport.http.get("/api/v1/deployments/cli-echo/logs", params={"replica": "rep_nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    too_long = client._transport.http.get("/api/v1/deployments/cli-echo/logs", params={"replica": "r" * 5000})
    assert too_long.status_code == 422 and "r" * 200 not in too_long.text
    dep.delete()
