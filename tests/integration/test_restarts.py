"""Faults during training with real processes: a worker killed with ``kill -9`` (restarted from
the latest checkpoint, or a failed job with the reason), and the control plane killed during a
multi-worker job."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.client.jobs import Job
from aicloud.testing.server import ServerProcess

from helpers import alive, digits_csv, split_digits

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


@pytest.fixture(scope="module")
def digits(
    tmp_path_factory: pytest.TempPathFactory, server: ServerProcess
) -> tuple[DatasetVersion, DatasetVersion]:
    return split_digits(server, "restart-digits", tmp_path_factory.mktemp("d"))


def train(client: Client, digits: tuple[DatasetVersion, DatasetVersion], **kwargs: Any) -> Job:
    train_ds, test_ds = digits
    params = kwargs.pop("params", {"epochs": 6, "batch_size": 64, "lr": 0.003, "seed": 0})
    return client.jobs.train(
        task="image-classification",
        dataset=train_ds,
        eval_dataset=test_ds,
        target="label",
        params=params,
        **kwargs,
    )


def wait_until(cond: Callable[[], bool], timeout: float = 180.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def worker_pids(home: Path, job_id: str) -> dict[int, int]:
    """rank → pid of a running job's workers, from the local executor's record."""
    record = json.loads((home / "jobs" / job_id / "child.json").read_text())
    return {int(w["rank"]): int(w["pid"]) for w in record["workers"]}


def epochs_logged(job: Job) -> list[int]:
    return list(job.metrics("train_loss").get("train_loss", {}).get("steps", []))


def test_killed_worker_restarts_from_the_checkpoint(
    client: Client, server: ServerProcess, digits: tuple[DatasetVersion, DatasetVersion]
) -> None:
    job = train(client, digits, workers=2, max_restarts=1, model_name="restarted")
    wait_until(lambda: (job.checkpoint.get("epoch") or 0) >= 2, what="the checkpoint of epoch 2")
    pids = worker_pids(server.home, job.id)
    os.kill(pids[1], signal.SIGKILL)  # kill -9 of one worker, mid-training
    job.wait(timeout=300)
    logs = job.logs()
    assert job.status == "succeeded", logs[-4000:]
    assert job.info.attempt == 1 and (job.info.message or "").startswith("restart 1 of 1: attempt 0 exited")
    resumed = job.metrics("resumed_from_epoch")["resumed_from_epoch"]["values"]
    assert len(resumed) == 1 and resumed[0] >= 2  # it went on from a checkpoint, not from epoch 0
    start = int(resumed[0])
    steps = epochs_logged(job)
    assert set(steps) == set(range(1, 7))
    assert all(steps.count(e) == 1 for e in range(1, start + 1))  # epochs up to the checkpoint ran once
    assert "resuming from the checkpoint of epoch" in logs
    accuracy = job.metrics("eval_accuracy")["eval_accuracy"]["values"][-1]
    assert accuracy > 0.85
    version = job.model_version
    assert version is not None and version.metrics["eval_accuracy"] == pytest.approx(accuracy)
    # the job ends once wrapped up: its run is closed by then (one run across both attempts)
    assert client.runs.get(job.run_id or "").status == "succeeded"


def test_killed_worker_without_restarts_fails_with_the_reason(
    client: Client, server: ServerProcess, digits: tuple[DatasetVersion, DatasetVersion]
) -> None:
    job = train(client, digits, workers=2, params={"epochs": 30, "batch_size": 64, "seed": 0})
    wait_until(lambda: len(epochs_logged(job)) >= 1, what="the first epoch")
    pids = worker_pids(server.home, job.id)
    started = time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    job.wait(timeout=120)
    assert time.monotonic() - started < 60  # never a hang
    assert job.status == "failed" and job.info.reason == "error" and job.info.attempt == 0
    assert job.info.usage["exit_code"] == -signal.SIGKILL
    assert client.runs.get(job.run_id or "").status == "failed"
    wait_until(lambda: not any(alive(p) for p in pids.values()), timeout=30, what="the workers to end")


def test_control_plane_kill_9_during_a_two_worker_job(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server()
    with Client(url=srv.url, token=srv.token) as c:
        ds = c.datasets.create("cp-digits", digits_csv(tmp_path / "digits.csv"))
        split = ds.split(train_size=0.8, seed=0, stratify="label")
        job = train(c, split, workers=2, params={"epochs": 5, "batch_size": 64, "lr": 0.003, "seed": 0})
        wait_until(lambda: len(epochs_logged(job)) >= 1, what="the first epoch")
        srv.kill()
        time.sleep(1.0)
        srv.start()
        job.wait(timeout=300)
        assert job.status == "succeeded", (job.info.reason, job.info.message)
        assert job.info.attempt == 0  # re-attached, not restarted
        assert epochs_logged(job) == [1, 2, 3, 4, 5]
