"""Multi-worker jobs end to end: a real control plane, the local executor, N real processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.testing.server import ServerProcess

from helpers import assert_error, split_digits

DDP_PARAMS = {"epochs": 4, "batch_size": 64, "lr": 0.003, "seed": 0}


@pytest.fixture(scope="module")
def digits(
    tmp_path_factory: pytest.TempPathFactory, server: ServerProcess
) -> tuple[DatasetVersion, DatasetVersion]:
    return split_digits(server, "ddp-digits", tmp_path_factory.mktemp("d"))


def test_two_worker_ddp_train_job(client: Client, digits: tuple[DatasetVersion, DatasetVersion]) -> None:
    train, test = digits
    job = client.jobs.train(
        task="image-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params=DDP_PARAMS,
        model_name="ddp-digits",
        workers=2,
    ).wait(timeout=300)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    # both ranks ran, each on its shard, in one process group
    assert "[rank 1] [aicloud] worker rank 1 of 2" in logs and "[aicloud] worker rank 0 of 2" in logs
    assert "[rank 1] task image-classification" in logs and "worker 1 of 2" in logs
    # metrics come from rank 0 only: one point per epoch
    metrics = job.metrics()
    assert metrics["train_loss"]["steps"] == [1, 2, 3, 4]
    assert metrics["eval_accuracy"]["steps"] == [1, 2, 3, 4]
    assert metrics["eval_accuracy"]["values"][-1] > 0.85
    version = job.model_version
    assert version is not None and version.config["training"]["workers"] == 2
    assert job.info.usage["cpu_seconds"] > 0 and job.info.usage["peak_rss_bytes"] > 100 * 1024 * 1024


RENDEZVOUS = """
import os, sys, time
import torch, torch.distributed as dist
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
print("env", rank, world, os.environ["LOCAL_RANK"], os.environ["MASTER_ADDR"], flush=True)
dist.init_process_group("gloo")
total = torch.tensor([rank + 1.0])
dist.all_reduce(total)
print("sum", rank, int(total.item()), flush=True)
dist.destroy_process_group()
if os.environ.get("FAIL") and rank == 1:
    sys.exit(3)
if os.environ.get("FAIL"):
    time.sleep(600)
"""


def test_command_job_workers_get_the_torchrun_environment(client: Client, tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(RENDEZVOUS)
    job = client.jobs.run(command="python ddp.py", code=script, workers=3).wait(timeout=180)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    assert "env 0 3 0 127.0.0.1" in logs and "[rank 2] env 2 3 2 127.0.0.1" in logs
    assert "sum 0 6" in logs and "[rank 1] sum 1 6" in logs and "[rank 2] sum 2 6" in logs


def test_one_failed_worker_stops_the_others(client: Client, tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(RENDEZVOUS)
    started = time.monotonic()
    job = client.jobs.run(command="python ddp.py", code=script, workers=2, env={"FAIL": "1"})
    job.wait(timeout=180)
    assert job.status == "failed" and job.info.reason == "error"
    assert job.info.usage["exit_code"] == 3  # rank 1's code: the first failure
    assert time.monotonic() - started < 120  # rank 0 (sleeping 600 s) was stopped
    assert "[rank 1] sum 1 3" in (job.info.message or "")


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        ("command", {"command": "true", "workers": 0}, "spec.workers"),
        ("command", {"command": "true", "max_restarts": 99}, "spec.max_restarts"),
        ("command", {"command": "true", "gpus": -1}, "spec.gpus"),
    ],
)
def test_bad_scale_out_specs_are_422(
    http: httpx.Client, kind: str, spec: dict[str, object], field: str
) -> None:
    err = assert_error(http.post("/api/v1/jobs", json={"kind": kind, "spec": spec}), 422, "validation_error")
    assert [d["field"] for d in err["details"]] == [field]


def test_bad_train_scale_out_specs_are_422(
    http: httpx.Client, digits: tuple[DatasetVersion, DatasetVersion]
) -> None:
    train, test = digits
    base = {"task": "image-classification", "dataset": train.ref, "eval_dataset": test.ref}
    for change, field in (
        ({"workers": 0}, "spec.workers"),
        ({"precision": "fp16"}, "spec.precision"),
        ({"checkpoint_every": -2}, "spec.checkpoint_every"),
    ):
        r = http.post("/api/v1/jobs", json={"kind": "train", "spec": {**base, **change}})
        err = assert_error(r, 422, "validation_error")
        assert err["details"][0]["field"] == field, err
        assert field in err["message"]


def test_checkpoint_api_rules(
    client: Client, http: httpx.Client, server: ServerProcess, tmp_path: Path
) -> None:
    script = tmp_path / "tok.py"
    script.write_text(
        "import os, time\nprint('TOKEN', os.environ['AICLOUD_TOKEN'], flush=True)\ntime.sleep(60)\n"
    )
    other = client.jobs.run(command="true").wait(timeout=60)
    job = client.jobs.run(command="python tok.py", code=script)
    deadline = time.monotonic() + 60
    while "TOKEN" not in (logs := job.logs()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    token = next(line.split()[1] for line in logs.splitlines() if line.startswith("TOKEN"))
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as jobclient:
        assert_error(jobclient.get(f"/api/v1/jobs/{job.id}/checkpoint"), 404, "not_found")
        put = jobclient.put(f"/api/v1/jobs/{job.id}/checkpoint?epoch=3&step=30", content=b"ckpt-bytes")
        assert put.status_code == 200, put.text
        record = put.json()
        assert (record["epoch"], record["step"], record["size"], record["attempt"]) == (3, 30, 10, 0)
        got = jobclient.get(f"/api/v1/jobs/{job.id}/checkpoint")
        assert got.content == b"ckpt-bytes" and '"epoch": 3' in got.headers["x-aicloud-checkpoint"]
        # a job token touches only its own job
        assert_error(jobclient.put(f"/api/v1/jobs/{other.id}/checkpoint", content=b"x"), 403)
        assert_error(jobclient.get(f"/api/v1/jobs/{other.id}/checkpoint"), 403)
    assert client.jobs.get(job.id).info.checkpoint["digest"] == record["digest"]
    assert job.download_checkpoint(tmp_path / "c.bin").read_bytes() == b"ckpt-bytes"
    job.cancel().wait(timeout=60)
    assert_error(http.put(f"/api/v1/jobs/{job.id}/checkpoint", content=b"late"), 409, "conflict")
