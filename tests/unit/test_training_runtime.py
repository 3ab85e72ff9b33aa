"""aicloud.training session and bootstrap: offline mode, batched metrics, model registration, jobs.

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

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

from aicloud.artifacts.architectures import MLP
from aicloud.artifacts.archive import extract_archive
from aicloud.artifacts.loader import load_model
from aicloud.client.retry import retrying
from aicloud.errors import InvalidDataError, UnavailableError, ValidationError
from aicloud.training import bootstrap, session
from aicloud.training.env import JobDoc, WorkloadEnv
from aicloud.training.session import Session

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


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in (
        "AICLOUD_URL",
        "AICLOUD_TOKEN",
        "AICLOUD_RUN_ID",
        "AICLOUD_JOB_ID",
        "AICLOUD_JOB_SPEC",
        "AICLOUD_OUTPUT_DIR",
        "AICLOUD_DATASETS",
        "AICLOUD_DATASET_TRAIN",
        "AICLOUD_DATASET_EVAL",
        "AICLOUD_CPUS",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AICLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    session.use_session(None)
    yield
    session.use_session(None)


def job_env(plane: FakeControlPlane, job: dict[str, Any]) -> dict[str, str]:
    return {
        "AICLOUD_URL": plane.url,
        "AICLOUD_TOKEN": "job-token",
        "AICLOUD_RUN_ID": "run1",
        "AICLOUD_JOB_ID": "job1",
        "AICLOUD_JOB_SPEC": json.dumps(job),
    }


# ---------------------------------------------------------------------------------------------------------
# offline


def test_offline_mode_writes_local_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session.log_params({"lr": 0.1, "layers": [2, 3]})
    session.log_metric("loss", 0.5)
    session.log_metric("loss", torch.tensor(0.25))
    session.log_metric("acc", np.float32(0.75), step=np.int64(10))
    session.log_metric("loss", float("nan"))  # skipped, with a warning
    session.flush()
    lines = [json.loads(x) for x in (tmp_path / "aicloud-run" / "metrics.jsonl").read_text().splitlines()]
    assert [(p["name"], p["step"], p["value"]) for p in lines] == [
        ("loss", 0, 0.5),
        ("loss", 1, 0.25),
        ("acc", 10, 0.75),
    ]
    assert json.loads((tmp_path / "aicloud-run" / "params.json").read_text()) == {"lr": 0.1, "layers": [2, 3]}
    out = capsys.readouterr()
    assert "loss=0.25 (step 1)" in out.out and "non-finite" in out.err
    with pytest.raises(ValidationError):
        session.log_metric("loss", 1.0, step=-1)


def test_offline_save_model_plain_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    out = session.save_model(model, example_input=torch.zeros(1, 4))
    folder = tmp_path / "aicloud-model"
    assert out["path"] == str(folder) and set(out["files"]) == {"config.json", "model.onnx"}
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_model(folder)(x), expected, atol=1e-5)
    with pytest.raises(ValidationError, match="example_input"):
        session.save_model(model)
    # a built-in architecture is saved as safetensors, replacing the ONNX file
    session.save_model(MLP(4, [3], 2), signature={"inputs": [{"name": f"f{i}"} for i in range(4)]})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


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


def test_job_doc_parses_both_forms() -> None:
    flat = JobDoc.parse(
        json.dumps({"kind": "train", "name": "n", "task": "t", "resolved_datasets": {"train": {}}})
    )
    assert (flat.kind, flat.name, flat.spec, flat.resolved) == ("train", "n", {"task": "t"}, {"train": {}})
    nested = JobDoc.parse(
        json.dumps({"kind": "command", "spec": {"command": "x", "resolved_datasets": {"a": {}}}})
    )
    assert (nested.kind, nested.spec, nested.resolved) == ("command", {"command": "x"}, {"a": {}})


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


def test_extract_archive_refuses_escapes(tmp_path: Path) -> None:
    def archive(*members: tarfile.TarInfo) -> Path:
        path = tmp_path / "a.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for m in members:
                tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
        return path

    def file(name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = 1
        return info

    def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        return info

    dest = tmp_path / "code"
    for members, why in (
        ([file("../evil")], "'..'"),
        ([file("ok/../../evil")], "'..'"),
        ([file("/etc/evil")], "absolute path"),
        ([link("passwd", "/etc/passwd")], "outside"),
        ([link("up", "../../secret")], "outside"),
        ([file("a"), link("hard", "../a", tarfile.LNKTYPE)], "outside"),
    ):
        with pytest.raises(InvalidDataError, match=why):
            extract_archive(archive(*members), dest)
    assert not (tmp_path / "evil").exists()
    assert extract_archive(archive(file("src/main.py"), link("cur", "src/main.py")), dest) == 2
    assert (dest / "src" / "main.py").read_bytes() == b"x"
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(InvalidDataError, match="cannot be extracted"):
        extract_archive(tmp_path / "junk.tar.gz", dest)


def test_one_off_calls_wait_for_a_restarting_control_plane(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise UnavailableError("cannot reach aicloud")
        return "ok"

    assert retrying(flaky, "GET /x") == "ok" and len(calls) == 3
    assert "GET /x: cannot reach aicloud; retrying" in capsys.readouterr().err

    def down() -> str:
        raise UnavailableError("down")

    def bad() -> str:
        raise ValidationError("bad")

    with pytest.raises(UnavailableError):
        retrying(down, "x", seconds=0.1)
    with pytest.raises(ValidationError):  # not transient: raised at once
        retrying(bad, "x")
