"""`aicloud job|run|model` as a user runs them: real subprocesses against a real server."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import run_cli

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import small_csv


def test_job_run_from_a_spec_file_then_model_and_run_commands(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    ds = client.datasets.create("cli-jobs", small_csv(tmp_path / "s.csv", rows=200))
    train, test = ds.split(train_size=0.75, seed=0, stratify="label")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "kind: train\nname: cli-mlp\nspec:\n  task: tabular-classification\n"
        f"  dataset: {train.ref}\n  eval_dataset: {test.ref}\n  target: label\n  model_name: cli-mlp\n"
        "  params: {epochs: 3, batch_size: 32, seed: 1}\n"
    )
    out = run_cli(server, "job", "run", "-f", str(spec))
    assert "succeeded" in out.stdout
    jobs = json.loads(run_cli(server, "job", "list", "-o", "json").stdout)
    job = next(j for j in jobs if j["name"] == "cli-mlp")
    assert job["status"] == "succeeded" and job["run_id"]
    shown = json.loads(run_cli(server, "job", "show", job["id"], "-o", "json").stdout)
    assert shown["model_version_id"]
    logs = run_cli(server, "job", "logs", job["id"]).stdout
    assert "eval_accuracy" in logs or "epoch" in logs
    models = json.loads(run_cli(server, "model", "list", "-o", "json").stdout)
    assert any(m["name"] == "cli-mlp" for m in models)
    run_cli(server, "model", "alias", "cli-mlp", "staging", "1")
    version = json.loads(run_cli(server, "model", "show", "cli-mlp@staging", "-o", "json").stdout)
    assert version["version"] == 1 and "staging" in version["aliases"]
    lineage = run_cli(server, "model", "lineage", "cli-mlp@staging").stdout
    assert f"{train.name}:{train.version}" in lineage and "split of cli-jobs:1" in lineage
    run = json.loads(run_cli(server, "run", "show", job["run_id"], "-o", "json").stdout)
    assert run["params"]["epochs"] == 3 and "eval_accuracy" in run["summary"]
    compared = json.loads(
        run_cli(server, "run", "compare", job["run_id"], job["run_id"], "-o", "json").stdout
    )
    assert len(compared) == 2 and compared[0]["param.epochs"] == 3


def test_command_job_from_the_cli_with_code(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("print('hello from a job')\n")
    spec = tmp_path / "cmd.yaml"
    spec.write_text("kind: command\nname: hello\nspec:\n  command: python hello.py\n")
    out = run_cli(server, "job", "run", "-f", str(spec), "--code", str(tmp_path / "hello.py"), "-o", "json")
    job = json.loads(out.stdout)
    assert job["status"] in ("pending", "running", "succeeded")
    waited = run_cli(server, "job", "wait", job["id"])
    assert "succeeded" in waited.stdout
    assert "hello from a job" in run_cli(server, "job", "logs", job["id"]).stdout
    failed = run_cli(server, "job", "show", "job_00000000000000000000", check=False)
    assert failed.returncode == 1 and "not_found" in failed.stderr
