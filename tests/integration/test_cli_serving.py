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

    @handler
    def echo(self, text: str) -> str:
        return self.prefix + text
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
    dep.delete()
