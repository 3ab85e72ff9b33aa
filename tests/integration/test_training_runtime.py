"""aicloud.training session and bootstrap: batched metrics, model registration, jobs (offline mode and
the pure parts: tests/unit/test_training_session.py).

A tiny HTTP server (http.server in a thread) stands in for the control plane and records requests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_breast_cancer

from aicloud.artifacts.architectures import MLP
from aicloud.training import bootstrap, session
from aicloud.training.env import WorkloadEnv
from aicloud.training.session import Session

from session_env import clean_env  # noqa: F401 (an autouse fixture)

SRC = str(Path(__file__).resolve().parents[2] / "src")


class FakeControlPlane:
    """Records every request; answers the workload routes of docs/training.md."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.blobs: dict[str, bytes] = {}
        self.datasets: dict[tuple[str, str], bytes] = {}
        self.lock = threading.Lock()
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                with plane.lock:
                    plane.requests.append(("GET", self.path, None))
                if parts[2:3] == ["blobs"] and parts[3] in plane.blobs:
                    return self._reply(200, plane.blobs[parts[3]], "application/octet-stream")
                if parts[2:3] == ["datasets"] and parts[-1] == "content":
                    data = plane.datasets.get((parts[3], parts[5]))
                    if data is not None:
                        return self._reply(200, data, "application/octet-stream")
                body = {"error": {"code": "not_found", "message": "nope", "details": None}}
                return self._reply(404, json.dumps(body).encode())

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                if parts[2] == "blobs":
                    digest = hashlib.sha256(raw).hexdigest()
                    with plane.lock:
                        plane.blobs[digest] = raw
                        plane.requests.append(("POST", self.path, len(raw)))
                    return self._reply(201, json.dumps({"digest": digest, "size": len(raw)}).encode())
                body = json.loads(raw)
                with plane.lock:
                    plane.requests.append(("POST", self.path, body))
                if parts[-1] == "metrics":
                    out: dict[str, Any] = {"count": len(body["points"])}
                elif parts[-1] == "versions":
                    out = {"id": "mv1", "name": parts[3], "version": 1, **body}
                else:
                    out = {"id": parts[3], "status": body.get("status", "running")}
                return self._reply(200, json.dumps(out).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def posts(self, suffix: str) -> list[Any]:
        with self.lock:
            return [b for m, p, b in self.requests if m == "POST" and p.endswith(suffix)]

    def points(self) -> list[dict[str, Any]]:
        return [p for body in self.posts("/metrics") for p in body["points"]]


@pytest.fixture
def plane() -> Iterator[FakeControlPlane]:
    fake = FakeControlPlane()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def job_env(plane: FakeControlPlane, job: dict[str, Any]) -> dict[str, str]:
    return {
        "AICLOUD_URL": plane.url,
        "AICLOUD_TOKEN": "job-token",
        "AICLOUD_RUN_ID": "run1",
        "AICLOUD_JOB_ID": "job1",
        "AICLOUD_JOB_SPEC": json.dumps(job),
    }


# ---------------------------------------------------------------------------------------------------------
# online


def test_metrics_are_batched(plane: FakeControlPlane) -> None:
    sess = Session(WorkloadEnv(url=plane.url, token="t", run_id="run1"))
    for i in range(2500):
        sess.log_metric("loss", 1.0 / (i + 1))
    sess.flush()
    points = plane.points()
    assert len(points) == 2500 and [p["step"] for p in points] == list(range(2500))
    assert len(plane.posts("/runs/run1/metrics")) <= 5
    assert all(set(p) == {"name", "step", "value", "timestamp"} for p in points)
    # a few points are sent by the background thread within about a second, without flush()
    sess.log_metric("acc", 0.5)
    deadline = time.monotonic() + 5
    while len(plane.points()) < 2501 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plane.points()[-1]["name"] == "acc"
    sess.close()


def test_metrics_are_flushed_at_exit(plane: FakeControlPlane, tmp_path: Path) -> None:
    script = "from aicloud.training import log_metric\nfor i in range(10):\n    log_metric('x', i)\n"
    env = {
        **os.environ,
        **job_env(plane, {"kind": "command", "name": "c", "command": "true"}),
        "PYTHONPATH": SRC,
    }
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert [p["value"] for p in plane.points()] == [float(i) for i in range(10)]
    assert not (tmp_path / "aicloud-run").exists()


def test_save_model_registers_a_version(plane: FakeControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in job_env(
        plane, {"kind": "command", "name": "job", "command": "x", "model_name": "m1"}
    ).items():
        monkeypatch.setenv(k, v)
    version = session.save_model(MLP(3, [4], 2), metrics={"acc": 0.9, "bad": float("nan")})
    assert version["name"] == "m1" and version["version"] == 1
    (body,) = plane.posts("/api/v1/models/m1/versions")
    assert set(body["files"]) == {"config.json", "model.safetensors"}
    assert set(body["files"].values()) <= set(plane.blobs)
    assert body["run_id"] == "run1" and body["job_id"] == "job1" and body["metrics"] == {"acc": 0.9}
    assert body["config"]["architecture"]["type"] == "mlp"


# ---------------------------------------------------------------------------------------------------------
# bootstrap


def bc_csv() -> bytes:
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame.to_csv(index=False).encode()


def train_job(**spec: Any) -> dict[str, Any]:
    resolved = {
        "train": {"id": "d1", "name": "bc", "version": 1, "format": "csv"},
        "eval": {"id": "d2", "name": "bc", "version": 1, "format": "csv"},
    }
    return {
        "kind": "train",
        "name": "bc-job",
        "task": "tabular-classification",
        "dataset": "bc:1",
        "eval_dataset": "bc:1",
        "target": "label",
        "params": {"epochs": 3},
        "model_name": "bc-model",
        "cpus": 1,
        "secrets": [],
        "resolved_datasets": resolved,
        **spec,
    }


def test_bootstrap_train_job(
    plane: FakeControlPlane, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plane.datasets[("bc", "1")] = bc_csv()
    for k, v in job_env(plane, train_job()).items():
        monkeypatch.setenv(k, v)
    assert bootstrap.main() == 0
    assert (tmp_path / "data" / "train.csv").read_bytes() == plane.datasets[("bc", "1")]
    assert json.loads(os.environ["AICLOUD_DATASETS"]) == {
        "train": str(tmp_path / "data" / "train.csv"),
        "eval": str(tmp_path / "data" / "eval.csv"),
    }
    (params,) = plane.posts("/runs/run1/params")
    assert params["params"]["epochs"] == 3 and params["params"]["dataset"] == "bc:1"
    names = {p["name"] for p in plane.points()}
    assert {"train_loss", "eval_loss", "eval_accuracy", "epoch_seconds", "samples_per_second"} <= names
    (version,) = plane.posts("/api/v1/models/bc-model/versions")
    assert version["metrics"]["eval_accuracy"] > 0.8 and version["run_id"] == "run1"
    assert plane.posts("/runs/run1/finish") == [{"status": "succeeded"}]


def test_bootstrap_failure_prints_traceback_and_fails_the_run(
    plane: FakeControlPlane, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plane.datasets[("bc", "1")] = bc_csv()
    for k, v in job_env(plane, train_job(target="nope")).items():
        monkeypatch.setenv(k, v)
    assert bootstrap.main() == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "spec.target" in err
    assert plane.posts("/runs/run1/finish") == [{"status": "failed"}]


def targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def command_job(plane: FakeControlPlane, command: str, script: str) -> dict[str, str]:
    code = targz({"train.py": textwrap.dedent(script).encode(), "pkg/util.py": b"X = 1\n"})
    digest = hashlib.sha256(code).hexdigest()
    plane.blobs[digest] = code
    plane.datasets[("raw", "2")] = b"a,b\n1,2\n"
    job = {
        "kind": "command",
        "name": "script",
        "command": command,
        "code": digest,
        "datasets": {"train": "raw:2"},
        "cpus": 1,
        "secrets": [],
        "env": {"K": "V"},
        "resolved_datasets": {"train": {"id": "d", "name": "raw", "version": 2, "format": "csv"}},
    }
    return {**os.environ, **job_env(plane, job), "PYTHONPATH": SRC}


def test_bootstrap_command_job(plane: FakeControlPlane, tmp_path: Path) -> None:
    script = """
        import json, os, pathlib
        from aicloud.training import log_metric
        train = pathlib.Path(os.environ["AICLOUD_DATASET_TRAIN"]).read_text()
        print("datasets", os.environ["AICLOUD_DATASETS"], train)
        print("cwd", os.getcwd(), "K", os.environ["K"], "util", pathlib.Path("pkg/util.py").exists())
        pathlib.Path(os.environ["AICLOUD_OUTPUT_DIR"], "out.txt").write_text("hi")
        log_metric("custom", 42.0)
        raise SystemExit(3)
    """
    env = command_job(plane, f"{shlex.quote(sys.executable)} train.py", script)
    proc = subprocess.run(
        [sys.executable, "-m", "aicloud.training.bootstrap"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert f"cwd {tmp_path / 'code'} K V util True" in proc.stdout
    assert "a,b\n1,2" in proc.stdout and str(tmp_path / "data" / "train.csv") in proc.stdout
    assert (tmp_path / "output" / "out.txt").read_text() == "hi"
    assert [p["value"] for p in plane.points() if p["name"] == "custom"] == [42.0]
    assert plane.posts("/runs/run1/finish") == [{"status": "failed"}]


def test_bootstrap_forwards_sigterm(plane: FakeControlPlane, tmp_path: Path) -> None:
    script = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (print("child got SIGTERM", flush=True), sys.exit(0)))
        print("ready", flush=True)
        time.sleep(60)
    """
    env = command_job(plane, f"exec {shlex.quote(sys.executable)} train.py", script)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aicloud.training.bootstrap"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("ready"):
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert "child got SIGTERM" in rest, "".join(lines) + rest
    assert proc.returncode == 0
    assert plane.posts("/runs/run1/finish") == [{"status": "cancelled"}]
