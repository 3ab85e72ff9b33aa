"""Sweeps end to end: a real server, real trial jobs (digits), pruning, the best model, a kill -9."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_cli import run_cli

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.client.sweeps import Sweep
from aicloud.testing.server import ServerProcess

from helpers import assert_error, digits_csv, split_digits

# Random search, and ASHA with a factor of 3: up to 5 trials at a rung, only the best one so far
# goes on, so with 6 trials some stop at epoch 1 or 3 unless each beat every earlier one there
# (a seed in the space keeps trials from tying). The digits CNN takes about 0.25 s an epoch on one
# core, long enough for the controller to see a trial's first epochs while it runs.
SPACE: dict[str, Any] = {
    "lr": {"type": "log_uniform", "low": 1e-4, "high": 3e-2},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "seed": {"type": "int", "low": 0, "high": 10_000},
}
ASHA = {"type": "asha", "min_resource": 1, "reduction_factor": 3}
BASE = {"epochs": 8, "batch_size": 32, "hidden": [32], "seed": 0}


@pytest.fixture(scope="module")
def digits(
    tmp_path_factory: pytest.TempPathFactory, server: ServerProcess
) -> tuple[DatasetVersion, DatasetVersion]:
    return split_digits(server, "sweep-digits", tmp_path_factory.mktemp("d"))


def _train(digits: tuple[DatasetVersion, DatasetVersion], **changes: Any) -> dict[str, Any]:
    train, test = digits
    return {
        "task": "image-classification",
        "dataset": train.ref,
        "eval_dataset": test.ref,
        "target": "label",
        "params": BASE,
        **changes,
    }


def test_a_digits_sweep_prunes_trials_and_registers_the_best_model(
    client: Client, server: ServerProcess, digits: tuple[DatasetVersion, DatasetVersion]
) -> None:
    train, test = digits
    sweep = client.jobs.sweep(
        SPACE,
        task="image-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params=BASE,
        model_name="sweep-digits-best",
        max_trials=6,
        parallelism=2,
        sampler="random",
        seed=3,
        pruner=ASHA,
    )
    assert isinstance(sweep, Sweep) and sweep.info.kind.value == "sweep"
    sweep.wait(timeout=400)
    assert sweep.status == "succeeded", (sweep.info, sweep.trials().model_dump())
    table = sweep.trials()
    assert [t.number for t in table.trials] == list(range(6))
    assert table.metric == "eval_accuracy" and table.direction == "maximize"
    pruned = [t for t in table.trials if t.state == "pruned"]
    assert pruned, table.model_dump()
    for t in pruned:
        job = client.jobs.get(t.job_id).info
        assert job.parent_id == sweep.id and (job.reason == "pruned" or job.status.value == "succeeded")
        # the objective stops at the epoch of the decision; the process stops a moment later
        assert t.pruned_at is not None and max(t.intermediate) == t.pruned_at < BASE["epochs"]
        assert t.pruned_at <= t.epochs <= BASE["epochs"]
    complete = [t for t in table.trials if t.state == "complete"]
    assert complete and all(
        t.epochs == BASE["epochs"] and len(t.intermediate) == BASE["epochs"] for t in complete
    )
    best = table.best
    assert best is not None and best.value == max(t.value or 0 for t in complete)
    assert set(best.params) == set(SPACE) and sweep.best_params == best.params
    # the best trial's model, registered under the sweep's model name, with lineage to the trial
    version = client.models.get("sweep-digits-best")
    assert sweep.refresh().info.model_version_id == version.id
    assert version.lineage["job_id"] == best.job_id and version.lineage["run_id"] == best.run_id
    assert version.lineage["sweep_id"] == sweep.id and version.lineage["trial"] == best.number
    assert version.metrics["eval_accuracy"] == pytest.approx(best.value)
    assert {d["role"] for d in version.lineage["datasets"]} == {"train", "eval"}
    usage = sweep.info.usage
    assert usage["best_trial"] == best.number and usage["epochs"] == table.epochs
    assert usage["pruned"] == len(pruned) and usage["trials"] == 6
    # the CLI shows the same table and the best params
    out = run_cli(server, "sweep", "show", sweep.id).stdout
    assert "pruned" in out and "best: trial" in out and "optimizer=" in out
    shown = json.loads(run_cli(server, "sweep", "show", sweep.id, "-o", "json").stdout)
    assert shown["best"]["number"] == best.number and len(shown["trials"]) == 6


def test_bad_sweeps_are_422_naming_the_field(
    http: httpx.Client, digits: tuple[DatasetVersion, DatasetVersion]
) -> None:
    def post(**spec: Any) -> dict[str, Any]:
        body = {"kind": "sweep", "spec": {"train": _train(digits), "space": SPACE, **spec}}
        return assert_error(http.post("/api/v1/jobs", json=body), 422, "validation_error")

    err = post(space={})
    assert err["details"][0]["field"] == "spec.space" and "empty" in err["message"]
    err = post(metric="val_accuracy")
    assert err["details"][0]["field"] == "spec.metric" and "eval_accuracy" in err["message"]
    err = post(space={"momentum": {"type": "uniform", "low": 0, "high": 1}})
    assert err["details"][0]["field"] == "spec.space.momentum"
    err = post(train=_train(digits, dataset="no-such-dataset"))
    assert err["details"][0]["field"] == "spec.train.dataset"
    err = post(train=_train(digits, target="nope"))
    assert err["details"][0]["field"] == "spec.train.target"
    err = post(max_trials=0)
    assert err["details"][0]["field"] == "spec.max_trials"
    jobs = http.get("/api/v1/jobs").json()
    assert not any(j["kind"] == "sweep" and j["status"] == "pending" for j in jobs)


def test_trials_of_a_job_that_is_not_a_sweep_is_422(client: Client, http: httpx.Client, digits: Any) -> None:
    job = client.jobs.run("true")
    assert_error(http.get(f"/api/v1/jobs/{job.id}/trials"), 422, "validation_error")
    assert_error(http.get("/api/v1/jobs/job_doesnotexist0000000/trials"), 404, "not_found")


def test_a_sweep_from_a_file_in_the_cli_and_its_cancel(
    server: ServerProcess, client: Client, digits: tuple[DatasetVersion, DatasetVersion], tmp_path: Path
) -> None:
    spec = {
        "kind": "sweep",
        "name": "cli-sweep",
        "spec": {
            "train": _train(digits, params={**BASE, "epochs": 500}),
            "space": SPACE,
            "max_trials": 4,
            "parallelism": 2,
            "pruner": "none",
        },
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    # `job run -f` takes the same file as `sweep create -f` when its kind is sweep
    out = run_cli(server, "job", "run", "-f", str(tmp_path / "sweep.yaml"), "--no-wait", "-o", "json")
    sweep = client.jobs.get_sweep(json.loads(out.stdout)["id"])
    assert sweep.name == "cli-sweep" and sweep.info.kind.value == "sweep"
    deadline = time.monotonic() + 120
    while not any(t.state == "running" for t in sweep.trials().trials):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert "cancel requested" in run_cli(server, "sweep", "cancel", sweep.id).stdout
    sweep.wait(timeout=120)
    assert sweep.status == "cancelled"
    trials = sweep.trials().trials
    assert len(trials) == 2 and all(t.status == "cancelled" for t in trials)


def test_control_plane_kill_9_mid_sweep_loses_no_trial_and_runs_none_twice(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server()
    with Client(url=srv.url, token=srv.token) as c:
        ds = c.datasets.create("digits", digits_csv(tmp_path / "digits.csv"))
        train, test = ds.split(train_size=0.8, seed=0, stratify="label")
        sweep = c.jobs.sweep(
            SPACE,
            task="image-classification",
            dataset=train,
            eval_dataset=test,
            params={**BASE, "epochs": 25},
            max_trials=4,
            parallelism=2,
            sampler="random",
            pruner="none",
        )
        deadline = time.monotonic() + 120
        while not any(t.state == "running" and t.intermediate for t in sweep.trials().trials):
            assert time.monotonic() < deadline, sweep.trials()
            time.sleep(0.2)
        before = {t.number: t.job_id for t in sweep.trials().trials}
    srv.kill()
    srv.start()
    with Client(url=srv.url, token=srv.token) as c:
        sweep = c.jobs.get_sweep(sweep.id)
        sweep.wait(timeout=400)
        table = sweep.trials()
        assert sweep.status == "succeeded", (sweep.info, table.model_dump())
        assert [t.number for t in table.trials] == [0, 1, 2, 3]
        assert {t.number: t.job_id for t in table.trials if t.number in before} == before
        assert all(t.state == "complete" and t.epochs == 25 for t in table.trials), table.model_dump()
        children = [j for j in c.jobs.list(limit=1000) if j.info.parent_id == sweep.id]
        assert len(children) == 4
        runs = [r for t in table.trials for r in c.runs.list(job_id=t.job_id)]
        assert len(runs) == 4  # each trial ran once to completion
