"""`aicloud run list|show|compare` as a user runs them: real subprocesses against a real server,
after two small training jobs with different params."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aicloud import Client
from aicloud.errors import ValidationError
from aicloud.testing.server import ServerProcess

from helpers import small_csv


def cli(
    srv: ServerProcess, *args: str, columns: int = 100, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``aicloud ARGS`` in a terminal ``columns`` wide."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(srv.home), AICLOUD_URL=srv.url, COLUMNS=str(columns))
    proc = subprocess.run(
        [sys.executable, "-m", "aicloud", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_run_list_show_and_compare_after_two_trainings(
    server: ServerProcess, client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    model = unique("runs-mlp")
    ds = client.datasets.create(unique("runs"), small_csv(tmp_path / "s.csv", rows=120))
    train, test = ds.split(train_size=0.75, seed=0, stratify="label")
    jobs = [
        client.jobs.train(
            task="tabular-classification",
            dataset=train,
            eval_dataset=test,
            target="label",
            model_name=model,
            name=f"{model}-lr{lr}",
            params={"epochs": 2, "batch_size": 32, "seed": 1, "lr": lr},
        )
        for lr in (0.01, 0.001)
    ]
    for job in jobs:
        assert job.wait(timeout=300).status == "succeeded", job.info.message
    run_ids = [job.info.run_id for job in jobs]
    assert all(run_ids)

    # list: filtered by model and status on the server, newest first; by a metric, best first.
    listed = json.loads(
        cli(server, "run", "list", "--model", model, "--status", "succeeded", "-o", "json").stdout
    )
    assert [r["id"] for r in listed] == run_ids[::-1]
    assert (
        json.loads(cli(server, "run", "list", "--model", model, "--status", "running", "-o", "json").stdout)
        == []
    )
    by_job = json.loads(cli(server, "run", "list", "--job", f"{model}-lr0.01", "-o", "json").stdout)
    assert [r["id"] for r in by_job] == [run_ids[0]]
    filtered = cli(
        server, "run", "list", "--filter", "params.lr = 0.001", "--name", model, "-o", "json"
    ).stdout
    assert [r["id"] for r in json.loads(filtered)] == [run_ids[1]]
    first = cli(server, "run", "list", "--model", model, "--limit", "1").stdout
    assert "1 of 2; the next page: --offset 1" in first
    ranked = json.loads(
        cli(server, "run", "list", "--model", model, "--metric", "eval_loss", "-o", "json").stdout
    )
    losses = [r["summary"]["eval_loss"] for r in ranked]
    assert len(ranked) == 2 and losses == sorted(losses)  # a loss: lowest first
    page = json.loads(
        cli(server, "run", "list", "--model", model, "--limit", "1", "--offset", "1", "-o", "json").stdout
    )
    assert [r["id"] for r in page] == [run_ids[0]]
    table = cli(server, "run", "list", "--model", model, "--metric", "eval_accuracy").stdout
    assert run_ids[0] in table and "eval_accuracy" in table

    # show: last, min, max and steps of each metric, and a sparkline per metric.
    shown = cli(server, "run", "show", run_ids[0]).stdout
    assert all(word in shown for word in ("last", "min", "max", "steps", "curve"))
    for metric in ("train_loss", "eval_loss", "eval_accuracy"):
        line = next(ln for ln in shown.splitlines() if f" {metric} " in ln)
        assert any(ch in line for ch in "▁▂▃▄▅▆▇█"), line
    data = json.loads(cli(server, "run", "show", run_ids[0], "-o", "json").stdout)
    loss = data["metrics"]["train_loss"]
    assert loss["steps"] == 2 and loss["min"] <= loss["last"] <= loss["max"]
    assert data["params"]["lr"] == 0.01 and "eval_accuracy" in data["summary"]

    # compare: the runs as columns, the differing param as a row, readable in 100 columns.
    compared = cli(server, "run", "compare", *run_ids).stdout
    lines = compared.splitlines()
    assert max(len(ln) for ln in lines) <= 100
    header = "\n".join(lines[:4])
    assert run_ids[0][:12] in header and run_ids[1][:12] in header
    lr_row = next(ln for ln in lines if " lr " in ln)
    assert "0.01" in lr_row and "0.001" in lr_row
    assert not any(" epochs " in ln for ln in lines)  # the same in both: only with --all-params
    assert any(" eval_accuracy " in ln for ln in lines) and "★" in compared
    everything = cli(server, "run", "compare", "--all-params", *run_ids).stdout
    assert any(" epochs " in ln for ln in everything.splitlines())
    records = json.loads(cli(server, "run", "compare", *run_ids, "-o", "json").stdout)
    assert [r["run_id"] for r in records] == run_ids and records[1]["param.lr"] == 0.001

    # five runs in 100 columns: the runs go on in a second table, none cut.
    many = cli(server, "run", "compare", *run_ids, *run_ids, run_ids[0]).stdout
    assert max(len(ln) for ln in many.splitlines()) <= 100 and "…" not in many
    assert many.count("┏") == 2

    # the SDK pages the same way.
    assert [r.id for r in client.runs.list(model=model, status="succeeded", limit=1)] == [run_ids[1]]


def test_run_list_refuses_a_metric_it_cannot_sort_by_and_a_missing_run_says_what_next(
    server: ServerProcess, client: Client
) -> None:
    with pytest.raises(ValidationError, match="metric"):
        client.runs.list(metric='a"b')
    bad = cli(server, "run", "list", "--metric", "a b", check=False)
    assert bad.returncode == 1 and "validation_error" in bad.stderr
    missing = cli(server, "run", "show", "run_00000000000000000000", check=False)
    assert missing.returncode == 1 and "not_found" in missing.stderr and "aicloud run list" in missing.stderr
