"""Sweeps over your own code end to end: a real server, trials that are command jobs running a tiny
script, its logged metric the objective, ASHA pruning by cancelling trials, the CLI's code upload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_cli import run_cli

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error

# A quadratic "loss" of the param x (optimum 0.3), logged at steps 1..5 and flushed at each step so
# that the sweep controller sees it while the trial runs. The script checks that the env variable,
# the JSON of params() and (with args: true) the --x=... argument all carry the same value.
SCRIPT = """\
import os, sys, time
from aicloud.training import flush, log_metric, params

p = params(x=0.0, delay=0.0)
assert float(os.environ["AICLOUD_PARAM_X"]) == p["x"], (os.environ["AICLOUD_PARAM_X"], p)
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
if "x" in args:
    assert float(args["x"]) == p["x"], (args, p)
for step in range(1, 6):
    log_metric(os.environ.get("METRIC", "loss"), (p["x"] - 0.3) ** 2 + 0.1 / step, step=step)
    flush()
    time.sleep(float(p["delay"]))
"""
X = {"x": {"type": "uniform", "low": -1.0, "high": 1.0}}


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT)
    return folder


def _loss(x: float, step: int = 5) -> float:
    return (x - 0.3) ** 2 + 0.1 / step


def test_a_sweep_file_over_a_code_folder_finds_the_best_x(
    server: ServerProcess, client: Client, code: Path
) -> None:
    doc = {
        "kind": "sweep",
        "name": "cmd-sweep",
        "spec": {
            "command": {"command": "python train.py", "code": "src", "params": {"delay": 0}},
            "space": X,
            "metric": "loss",
            "args": True,
            "max_trials": 4,
            "parallelism": 2,
            "sampler": {"type": "random", "seed": 5},
            "pruner": "none",
        },
    }
    (code.parent / "sweep.yaml").write_text(yaml.safe_dump(doc))
    out = run_cli(server, "sweep", "create", "-f", str(code.parent / "sweep.yaml"), "--no-wait", "-o", "json")
    sweep = client.jobs.get_sweep(json.loads(out.stdout)["id"])
    assert sweep.name == "cmd-sweep"
    sweep.wait(timeout=300)
    table = sweep.trials()
    assert sweep.status == "succeeded", (sweep.info, table.model_dump())
    assert table.metric == "loss" and table.direction == "minimize"
    assert [t.state for t in table.trials] == ["complete"] * 4, table.model_dump()
    for t in table.trials:
        job = client.jobs.get(t.job_id).info
        assert job.kind.value == "command" and job.parent_id == sweep.id
        assert job.spec["command"] == f"python train.py --delay=0 --x={json.dumps(t.params['x'])}"
        assert t.value == pytest.approx(_loss(t.params["x"]))
        assert sorted(t.intermediate) == [1, 2, 3, 4, 5] and t.epochs == 5
        assert t.run_id is not None
        run = client.runs.get(t.run_id)  # the run records the trial's params: the runs table shows them
        assert run.params["x"] == t.params["x"] and run.params["delay"] == 0
    best = table.best
    assert best is not None
    assert best.params["x"] == min((t.params["x"] for t in table.trials), key=lambda x: abs(x - 0.3))
    assert sweep.info.usage["best_trial"] == best.number
    shown = run_cli(server, "sweep", "show", sweep.id).stdout
    assert "best: trial" in shown and "x=" in shown
    # the console's sweep pages show what each trial runs
    cookies = {"aicloud_console": server.token}
    for path in (f"/sweeps/{sweep.id}", "/sweeps"):
        page = httpx.get(server.url + path, cookies=cookies, timeout=30)
        assert page.status_code == 200 and "python train.py" in page.text, page.text[:500]


def test_asha_prunes_command_trials_by_cancelling_their_jobs(client: Client, code: Path) -> None:
    sweep = client.jobs.sweep(
        X,
        command="python train.py",
        code=code,
        params={"delay": 0.6},
        metric="loss",
        max_trials=6,
        parallelism=2,
        sampler="random",
        seed=11,
        pruner={"type": "asha", "min_resource": 1, "reduction_factor": 3},
    )
    sweep.wait(timeout=400)
    table = sweep.trials()
    assert sweep.status == "succeeded", (sweep.info, table.model_dump())
    pruned = [t for t in table.trials if t.state == "pruned"]
    assert pruned, table.model_dump()
    for t in pruned:
        job = client.jobs.get(t.job_id).info
        # the decision stops the objective at that step; the job is cancelled unless it ended first
        assert job.reason == "pruned" or job.status.value == "succeeded", job
        assert t.pruned_at is not None and max(t.intermediate) == t.pruned_at < 5
    assert any(client.jobs.get(t.job_id).info.reason == "pruned" for t in pruned)
    complete = [t for t in table.trials if t.state == "complete"]
    assert complete and table.best is not None
    assert table.best.value == min(t.value for t in complete if t.value is not None)


def test_a_command_that_never_logs_the_metric_fails_its_trial_saying_so(client: Client, code: Path) -> None:
    sweep = client.jobs.sweep(
        X, command="python train.py", code=code, env={"METRIC": "other"}, metric="val_loss", max_trials=1
    )
    sweep.wait(timeout=200)
    assert sweep.status == "failed"
    (trial,) = sweep.trials().trials
    assert trial.state == "failed" and "never logged metric 'val_loss'" in (trial.note or "")
    assert "never logged metric 'val_loss'" in (sweep.info.message or "")


def test_bad_command_sweeps_are_422_naming_the_field(http: httpx.Client) -> None:
    command = {"command": "python train.py"}
    train = {"task": "image-classification", "dataset": "d", "eval_dataset": "e", "target": "label"}

    def post(**spec: Any) -> dict[str, Any]:
        body = {"kind": "sweep", "spec": {"space": X, **spec}}
        return assert_error(http.post("/api/v1/jobs", json=body), 422, "validation_error")

    err = post(command=command)
    assert err["details"][0]["field"] == "spec.metric" and "log_metric" in err["message"]
    err = post(command=command, train=train, metric="loss")
    assert err["details"][0]["field"] == "spec" and "exactly one of train" in err["message"]
    err = post(metric="loss")
    assert "neither" in err["message"]
    err = post(command={**command, "datasets": {"train": "no-such-dataset"}}, metric="loss")
    assert err["details"][0]["field"] == "spec.command.datasets.train"
    err = post(command={**command, "code": "0" * 64}, metric="loss")
    assert err["details"][0]["field"] == "spec.command.code"
    err = post(command={**command, "nope": 1}, metric="loss")
    assert err["details"][0]["field"] == "spec.command.nope"
    err = post(command=command, metric="loss", space={"bad-name": X["x"]})
    assert err["details"][0]["field"] == "spec.space.bad-name"
