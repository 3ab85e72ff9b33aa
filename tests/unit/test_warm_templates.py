"""Warm templates, the pure parts: which template a replica may fork from, which launches the executor
starts warm, and the command line of a template's sandbox (docs/serving.md, "Warm templates")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aicloud.artifacts.runtimes import needs_torch
from aicloud.executors.base import LaunchRequest
from aicloud.executors.sandbox import TEMPLATE_CAPS, Sandbox
from aicloud.executors.templates import Templates, template_root
from aicloud.server.services.replicas import template_of

MLP = ({"architecture": {"type": "mlp"}}, ["config.json", "model.safetensors"])
CNN = ({"architecture": {"type": "cnn"}}, ["config.json", "model.safetensors"])
ONNX = ({"architecture": {"type": "onnx"}}, ["config.json", "model.onnx"])


@pytest.mark.parametrize(
    ("model", "runtime", "torch"),
    [
        (MLP, None, False),  # numpy
        (MLP, "numpy", False),
        (MLP, "torch", True),
        (MLP, "onnxruntime", True),  # exported in torch when the replica starts
        (MLP, "auto", True),
        (CNN, None, True),
        (CNN, "onnxruntime", True),
        (ONNX, None, False),
        (ONNX, "onnxruntime", False),
        (ONNX, "auto", False),  # ONNX Runtime is the only candidate
    ],
)
def test_which_replicas_import_torch(model: tuple[dict, list[str]], runtime: str | None, torch: bool) -> None:
    assert needs_torch(runtime, *model) is torch
    spec = {"runtime": runtime, "model_version": {"config": model[0], "files": dict.fromkeys(model[1], "d")}}
    assert template_of(spec) == ("serving-torch" if torch else "serving")


def test_a_service_forks_from_the_serving_template() -> None:
    assert (
        template_of({"service": {"code": "sha256:x", "entrypoint": "a.py:A"}, "model_version": None})
        == "serving"
    )


def request(**changes: object) -> LaunchRequest:
    base: dict[str, object] = {
        "job_id": "rep_1",
        "argv": [sys.executable, "-m", "aicloud.serving.replica"],
        "env": {"AICLOUD_REPLICA_PORT": "1"},
        "template": "serving",
    }
    return LaunchRequest(**{**base, **changes})  # type: ignore[arg-type]


def test_which_launches_start_warm(tmp_path: Path) -> None:
    templates = Templates(tmp_path / "jobs", sys.executable, None)
    assert templates.usable(request())
    assert templates.usable(request(template="serving-torch"))
    for cold in (
        request(template=None),
        request(template="other"),
        request(gpus=1),
        request(workers=2),
        request(cwd=str(tmp_path)),
        request(argv=["/another/python", "-m", "aicloud.serving.replica"]),
        request(env={"PYTHONPATH": "/elsewhere"}),  # acts when an interpreter starts
        request(env={"LD_PRELOAD": "x.so"}),
    ):
        assert not templates.usable(cold), cold
    # inherited from the control plane, the template has them too
    inherited = dict(templates.env)
    assert templates.usable(request(env={**{"AICLOUD_REPLICA_PORT": "1"}, **inherited}))


def test_under_the_sandbox_only_root_starts_warm(tmp_path: Path) -> None:
    for as_root, warm in ((True, True), (False, False)):
        sandbox = Sandbox(bwrap="/usr/bin/bwrap", as_root=as_root, setpriv="/usr/bin/setpriv", readonly=())
        assert Templates(tmp_path / "jobs", sys.executable, sandbox).usable(request()) is warm


def test_the_templates_folder_is_per_control_plane_and_python(tmp_path: Path) -> None:
    one = template_root(tmp_path / "a" / "jobs", sys.executable)
    assert one == template_root(tmp_path / "a" / "jobs", sys.executable)
    assert one != template_root(tmp_path / "b" / "jobs", sys.executable)
    assert one != template_root(tmp_path / "a" / "jobs", "/another/python")
    assert one.name.startswith("aicloud-warm-")


def test_a_templates_sandbox_keeps_its_capabilities_and_outlives_its_parent(tmp_path: Path) -> None:
    sandbox = Sandbox(bwrap="/usr/bin/bwrap", as_root=True, setpriv="/usr/bin/setpriv", readonly=())
    argv = ["python", "-m", "aicloud.serving.template"]
    template = sandbox.wrap(argv, workdir=str(tmp_path), uid=0, template=True)
    replica = sandbox.wrap(argv, workdir=str(tmp_path), uid=1_900_000_001)
    assert "--die-with-parent" not in template and "--die-with-parent" in replica
    assert template[template.index("--cap-add") + 1] == ",".join(TEMPLATE_CAPS)
    assert "--cap-add" not in replica
    assert template[-4:] == ["--reap-all", *argv]  # its init waits for every process, then exits
    assert "/usr/bin/setpriv" not in template and "/usr/bin/setpriv" in replica
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert flag in template
