"""Training jobs, tracking and the registry with real subprocesses against a real server."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.errors import NotFoundError, ValidationError
from aicloud.testing.server import ServerProcess

from helpers import alive, assert_error, split_digits

FAST_CNN = {"epochs": 6, "batch_size": 64, "lr": 0.003, "seed": 0}


@pytest.fixture(scope="module")
def digits(
    tmp_path_factory: pytest.TempPathFactory, server: ServerProcess
) -> tuple[DatasetVersion, DatasetVersion]:
    return split_digits(server, "jobs-digits", tmp_path_factory.mktemp("d"))


@pytest.fixture(scope="module")
def trained(server: ServerProcess, digits: tuple[DatasetVersion, DatasetVersion]) -> Iterator[str]:
    """One digits CNN job, shared by the registry tests; yields its job id."""
    with Client(url=server.url, token=server.token) as c:
        train, test = digits
        job = c.jobs.train(
            task="image-classification",
            dataset=train,
            eval_dataset=test,
            target="label",
            params=FAST_CNN,
            model_name="digits-cnn",
        )
        job.wait(timeout=240)
        assert job.status == "succeeded", job.logs()[-3000:]
        yield job.id


def test_train_job_tracks_metrics_and_registers_a_model(
    client: Client, trained: str, digits: tuple[DatasetVersion, DatasetVersion], tmp_path: Path
) -> None:
    job = client.jobs.get(trained)
    metrics = job.metrics()
    assert (
        metrics["train_loss"]["steps"] == list(range(1, FAST_CNN["epochs"] + 1))
        or len(metrics["train_loss"]["steps"]) == FAST_CNN["epochs"]
    )
    assert metrics["eval_accuracy"]["values"][-1] > 0.85
    version = job.model_version
    assert version is not None and version.name == "digits-cnn"
    assert version.metrics["eval_accuracy"] > 0.85
    assert {"config.json"} <= set(version.files) and not any(
        f.endswith((".pt", ".pkl")) for f in version.files
    )
    train, test = digits
    roles = {d["role"]: d for d in version.lineage["datasets"]}
    assert roles["train"]["id"] == train.id and roles["eval"]["id"] == test.id
    assert version.lineage["job_id"] == job.id and version.lineage["run_id"] == job.run_id
    assert job.info.usage.get("cpu_seconds", 0) > 0
    assert "eval_accuracy" in job.logs() or job.logs()


def test_aliases_and_local_load(
    client: Client, trained: str, digits: tuple[DatasetVersion, DatasetVersion], tmp_path: Path
) -> None:
    version = client.jobs.get(trained).model_version
    assert version is not None
    client.models.set_alias("digits-cnn", "production", version.version)
    assert client.models.get("digits-cnn@production").id == version.id
    model = client.models.load("digits-cnn@production")
    _, test = digits
    frame = pd.read_csv(client.datasets.download(test.name, tmp_path / "test.csv", version=test.version))
    predictions = np.asarray(model(frame.drop(columns=["label"])))
    accuracy = float((predictions == frame["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(version.metrics["eval_accuracy"], abs=0.01)
    with pytest.raises(NotFoundError):
        client.models.get("digits-cnn@no-such-alias")
    lineage = client.models.lineage("digits-cnn@production")
    assert lineage["datasets"][0]["parent"]["name"] == "jobs-digits"


@pytest.mark.parametrize(
    ("spec_change", "field"),
    [
        ({"dataset": "no-such-dataset:1"}, "spec.dataset"),
        ({"target": "not_a_column"}, "spec.target"),
        ({"params": {"epochs": -1}}, "spec.params.epochs"),
        ({"task": "telepathy"}, "spec.task"),
    ],
)
def test_bad_train_specs_are_422_naming_the_field(
    http: httpx.Client,
    digits: tuple[DatasetVersion, DatasetVersion],
    spec_change: dict[str, object],
    field: str,
) -> None:
    train, test = digits
    spec = {
        "task": "image-classification",
        "dataset": train.ref,
        "eval_dataset": test.ref,
        "target": "label",
        **spec_change,
    }
    err = assert_error(
        http.post("/api/v1/jobs", json={"kind": "train", "spec": spec}), 422, "validation_error"
    )
    assert any(d["field"].startswith(field) for d in err["details"]), err


def test_regression_on_a_text_target_is_422(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": range(40), "y": [f"s{i % 3}" for i in range(40)]}).to_csv(path, index=False)
    ds = client.datasets.create("text-target", path)
    with pytest.raises(ValidationError) as info:
        client.jobs.train(task="tabular-regression", dataset=ds, eval_dataset=ds, target="y")
    assert info.value.details[0]["field"] == "spec.target"


SCRIPT = """
import json, os, sys
import torch
from aicloud.training import log_params, log_metric, save_model
assert os.environ["API_KEY"] == "s3cret-value", "secret not injected"
data = os.environ["AICLOUD_DATASET_TRAIN"]
rows = sum(1 for _ in open(data)) - 1
log_params({"rows": rows, "lr": 0.1})
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
for step in range(50):
    log_metric("loss", 1.0 / (step + 1), step=step)
save_model(model, example_input=torch.zeros(1, 3), name="my-script-model")
print("done with", rows, "rows")
"""


def test_command_job_with_code_secrets_and_save_model(client: Client, tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text(SCRIPT)
    csv = tmp_path / "small.csv"
    csv.write_text("a,b,c\n" + "".join(f"{i},{i},{i}\n" for i in range(25)))
    ds = client.datasets.create("cmd-data", csv)
    client.secrets.create("API_KEY", "s3cret-value")
    job = client.jobs.run(
        command="python train.py", code=tmp_path / "code", datasets={"train": ds}, secrets=["API_KEY"]
    )
    job.wait(timeout=180)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    assert "done with 25 rows" in logs and "s3cret-value" not in logs
    run = client.runs.get(job.run_id or "")
    assert run.params["rows"] == 25
    loss = client.runs.metrics(run.id, "loss")["loss"]
    assert loss["steps"] == list(range(50))
    version = job.model_version
    assert version is not None and version.name == "my-script-model"
    assert version.lineage["code_digest"] == job.info.spec["code"]


def test_crashing_script_fails_with_its_last_log_lines(client: Client, tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text("for i in range(100):\n    print('line', i)\nraise SystemExit('boom: bad things')\n")
    job = client.jobs.run(command="python crash.py", code=script).wait(timeout=120)
    assert job.status == "failed" and job.info.reason == "error"
    message = job.info.message or ""
    assert "boom: bad things" in message and "line 99" in message and "line 10\n" not in message
    assert len(message.splitlines()) <= 50


def test_cancel_stops_the_script_and_its_children(client: Client, tmp_path: Path) -> None:
    # the job's pids are its sandbox's own: find its processes on this machine by their command lines
    marker = f"{1000 + uuid.uuid4().int % 10**6 / 10**7:.7f}"
    script = tmp_path / "forever.sh"
    script.write_text(f"sleep {marker} &\necho child $!\necho me $$\nwhile true; do sleep 1; done\n")
    job = client.jobs.run(command=f"sh forever.sh {marker}", code=script)
    deadline = time.monotonic() + 60
    pids: list[int] = []
    while len(pids) < 2 and time.monotonic() < deadline:
        pids = _pids_running(marker)
        time.sleep(0.2)
    assert len(pids) == 2, pids  # the script and its child
    job.cancel()
    job.wait(timeout=60)
    assert job.status == "cancelled"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)]


def _pids_running(marker: str) -> list[int]:
    """Processes on this machine with ``marker`` as an argument."""
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if marker in (p.info["cmdline"] or []) and alive(p.pid)
    ]


def test_job_token_is_scoped_and_revoked(client: Client, server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "leak.py"
    script.write_text("import os\nprint('TOKEN', os.environ['AICLOUD_TOKEN'])\n")
    job = client.jobs.run(command="python leak.py", code=script).wait(timeout=120)
    assert job.status == "succeeded"
    token = next(line.split()[1] for line in job.logs().splitlines() if line.startswith("TOKEN"))
    r = httpx.get(f"{server.url}/api/v1/datasets", headers={"Authorization": f"Bearer {token}"})
    assert_error(r, 401, "unauthenticated")


def test_viewer_cannot_submit(
    client: Client,
    server: ServerProcess,
    digits: tuple[DatasetVersion, DatasetVersion],
    unique: Callable[[str], str],
) -> None:
    viewer = client.tokens.create(unique("v"), role="viewer")
    r = httpx.post(
        f"{server.url}/api/v1/jobs",
        headers={"Authorization": f"Bearer {viewer.token}"},
        json={"kind": "command", "spec": {"command": "true"}},
    )
    assert_error(r, 403, "permission_denied")


def test_run_metrics_in_batches_100k_points(client: Client, http: httpx.Client) -> None:
    run = http.post("/api/v1/runs", json={"name": "big"}).json()
    for batch in range(10):
        points = [{"name": "loss", "step": batch * 10_000 + i, "value": float(i)} for i in range(10_000)]
        r = http.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": points})
        assert r.json() == {"count": 10_000}
    series = client.runs.metrics(run["id"])["loss"]
    assert series["steps"] == list(range(100_000))
    too_many = [{"name": "x", "step": 0, "value": 1.0}] * 10_001
    assert_error(http.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": too_many}), 422)
    assert_error(
        http.post(
            f"/api/v1/runs/{run['id']}/metrics",
            content=b'{"points": [{"name": "x", "value": NaN}]}',
            headers={"Content-Type": "application/json"},
        ),
        422,
    )


def _rss_mb(pid: int) -> float:
    return int(psutil.Process(pid).memory_info().rss) / (1024 * 1024)


def test_huge_stdout_is_capped_and_memory_stays_flat(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server(env={"AICLOUD_MAX_LOG_BYTES": str(1024 * 1024)})
    assert srv.proc is not None
    script = tmp_path / "spam.py"
    script.write_text(
        "import sys\nblock = b'x' * 1048575 + b'\\n'\nfor _ in range(1024):\n"
        "    sys.stdout.buffer.write(block)\nprint('END')\n"
    )
    with Client(url=srv.url, token=srv.token) as c:
        before = _rss_mb(srv.proc.pid)
        job = c.jobs.run(command="python spam.py", code=script).wait(timeout=240)
        assert job.status == "succeeded"
        logs = job.logs()
        assert len(logs) < 1.2 * 1024 * 1024 and "truncated" in logs
    assert _rss_mb(srv.proc.pid) - before < 50


def test_control_plane_kill_9_during_a_job(make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    srv = make_server()
    script = tmp_path / "slow.py"
    script.write_text(
        "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
    )
    with Client(url=srv.url, token=srv.token) as c:
        job = c.jobs.run(command="python slow.py", code=script)
        while job.status == "pending":
            time.sleep(0.1)
        srv.kill()
        srv.start()
        job.wait(timeout=120)
        assert job.status == "succeeded", (job.info.reason, job.info.message)
        assert "tick 5" in job.logs()


def test_job_logs_follow_in_the_cli(server: ServerProcess, client: Client, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "count.py"
    script.write_text("import time\nfor i in range(5):\n    print('n', i, flush=True)\n    time.sleep(0.3)\n")
    job = client.jobs.run(command="python count.py", code=script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_URL=server.url, AICLOUD_TOKEN=server.token, AICLOUD_HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "aicloud", "job", "logs", "-f", job.id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "n 4" in out.stdout
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-m", "aicloud", "job", "show", job.id, "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert shown["status"] == "succeeded"
