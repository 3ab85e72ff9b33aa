"""`aicloud deploy` and `aicloud predict` as real subprocesses against a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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


def test_deploy_a_service_class_and_read_its_logs(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
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
    no_replica = client._transport.http.get("/api/v1/deployments/cli-echo/logs", params={"offset": 0})
    assert no_replica.status_code == 422 and no_replica.json()["error"]["details"][0]["field"] == "offset"

    # following: what the replica writes after the first read, once, in whole lines
    pieces = dep.iter_logs(follow=True, lines=1, poll_s=0.1)
    first_replica, first = next(pieces)
    assert first_replica == replica and first.endswith("\n") and first.count("\n") == 1
    again = client._transport.http.post("/v1/endpoints/cli-echo/boom", json={"text": "again"})
    assert again.status_code == 500
    followed = ""
    deadline = time.monotonic() + 30
    while "no echo for again" not in followed and time.monotonic() < deadline:
        followed += next(pieces)[1]
    pieces.close()
    assert "RuntimeError: no echo for again" in followed
    assert "no echo for x" not in followed and "echo service set up" not in followed

    # the CLI's --follow prints as the replica writes, and Ctrl-C ends it cleanly
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(server.home), AICLOUD_URL=server.url, COLUMNS="200")
    cmd = [sys.executable, "-m", "aicloud", "deploy", "logs", "cli-echo", "-f", "--lines", "1"]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        printed: list[str] = []
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: printed.extend(proc.stdout or ()), daemon=True)
        reader.start()

        def printed_soon(text: str, seconds: float = 60) -> bool:  # a loaded machine starts it slowly
            deadline = time.monotonic() + seconds
            while text not in "".join(printed) and time.monotonic() < deadline:
                time.sleep(0.1)
            return text in "".join(printed)

        assert printed_soon(f"replica {replica}")  # it printed the tail and polls
        cli_boom = client._transport.http.post("/v1/endpoints/cli-echo/boom", json={"text": "cli"})
        assert cli_boom.status_code == 500
        assert printed_soon("RuntimeError: no echo for cli")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(10)
        err = proc.stderr.read() if proc.stderr else ""
    out = "".join(printed)
    assert proc.returncode == 0, err
    assert f"replica {replica}" in out and "RuntimeError: no echo for cli" in out
    dep.delete()
