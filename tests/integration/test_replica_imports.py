"""A replica that needs no torch never imports it (issue #21, cold start): a Service that does not
use torch, the built-in MLP served in numpy and an ONNX version served with ONNX Runtime, through
the real server (a Service reports ``sys.modules``; a model replica's process maps no libtorch),
and in a fresh interpreter (``sys.modules`` after the app is built and warmed up)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from aicloud import Client
from aicloud.artifacts.format import save_onnx
from aicloud.testing.server import ServerProcess

from model_files import digits_like

SERVICE = """
import sys

from aicloud import Service, handler


class Modules(Service):
    @handler
    def loaded(self, names: list[str]) -> dict:
        return {n: n in sys.modules for n in names}
"""


def onnx_model(folder: Path) -> Path:
    """An ONNX model of your own (tensor input ``input`` of 7 floats → 2 outputs)."""
    module = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()
    return save_onnx(folder, module, torch.zeros(2, 7))


def register(client: Client, folder: Path, name: str) -> str:
    files = {p.name: client.blobs.upload(p.read_bytes()) for p in sorted(folder.iterdir())}
    config = json.loads((folder / "config.json").read_text())
    out = client.models.register_version(
        name, files, signature=config.get("signature") or {}, config=config, metrics={}
    )
    return f"{name}:{out['version']}"


def replica_pids(server: ServerProcess, deployment: str) -> Iterator[int]:
    """The replica interpreters of ``deployment`` (found through /proc by their environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the interpreter itself (python -m aicloud.serving.replica), not the sandbox or the
            # supervisor that started it
            if (entry / "cmdline").read_bytes().split(b"\0")[1:3] != [b"-m", b"aicloud.serving.replica"]:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"AICLOUD_URL={server.url}".encode() in env and (
            f"AICLOUD_DEPLOYMENT_NAME={deployment}".encode() in env
        ):
            yield int(entry.name)


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_a_service_that_does_not_use_torch_never_imports_it(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "modules.py").write_text(SERVICE)
    dep = client.deployments.create(
        unique("imports-svc"), service=tmp_path / "svc", entrypoint="modules.py:Modules"
    ).wait_ready(timeout=120)
    try:
        seen = dep.call("loaded", {"names": ["torch", "pandas", "onnxruntime", "aicloud.serving"]})
        assert seen == {"torch": False, "pandas": False, "onnxruntime": False, "aicloud.serving": True}
    finally:
        dep.delete()


def test_model_replicas_that_need_no_torch_never_load_it(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    mlp, _ = digits_like(tmp_path / "mlp")
    mlp_ref = register(client, mlp, unique("imports-mlp"))
    onnx_ref = register(client, onnx_model(tmp_path / "onnx"), unique("imports-onnx"))
    cases = {  # deployment → whether its replica needs torch
        client.deployments.create(unique("imp-mlp-numpy"), model=mlp_ref, runtime="numpy").name: False,
        client.deployments.create(unique("imp-mlp-unset"), model=mlp_ref).name: False,
        client.deployments.create(unique("imp-onnx"), model=onnx_ref, runtime="onnxruntime").name: False,
        client.deployments.create(unique("imp-mlp-torch"), model=mlp_ref, runtime="torch").name: True,
    }
    try:
        for name, needs_torch in cases.items():
            client.deployments.get(name).wait_ready(timeout=300)
            deadline = time.monotonic() + 30
            while not (pids := list(replica_pids(server, name))):
                assert time.monotonic() < deadline, f"no replica process of {name}"
                time.sleep(0.2)
            assert [maps_torch(pid) for pid in pids] == [needs_torch] * len(pids), name
    finally:
        for name in cases:
            client.deployments.get(name).delete()


def test_a_fresh_interpreter_serving_onnx_never_imports_torch(tmp_path: Path) -> None:
    folder = onnx_model(tmp_path / "onnx")
    for runtime in (None, "onnxruntime", "auto"):  # auto: ONNX Runtime is the only candidate
        code = (
            "import sys\n"
            "from aicloud.serving.app import ReplicaConfig, build_app\n"
            "from aicloud.serving.runtime import ArtifactRuntime\n"
            f"rt = ArtifactRuntime({str(folder)!r}, {runtime!r}, threads=1)\n"
            "app = build_app(ReplicaConfig(key='k'), runtime=rt, start=True)\n"
            "assert app.runtime.engine == 'onnxruntime', app.runtime.engine\n"
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (runtime, done.stderr[-3000:])
