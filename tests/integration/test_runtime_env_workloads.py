"""Runtime environments (``runtime_env``) of command jobs and deployments: real server, real pip, real
sandboxed subprocesses. The first job builds an env with LightGBM and registers an ONNX model; a second
job with the same spec (from a job file through the CLI) finds it cached."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_cli import run_cli

from aicloud import Client, __version__
from aicloud.errors import AicloudError
from aicloud.executors.envrun import spec_hash
from aicloud.executors.runtime_env import other_python
from aicloud.testing.server import ServerProcess, sandbox_unavailable

from helpers import assert_error

HERE = Path(__file__).parent
LGBM = ["lightgbm", "onnxmltools"]
BUILD_TIMEOUT = 600  # a cold build downloads LightGBM and the ONNX converters from PyPI

TRAIN = '''
"""Train LightGBM (from the job's runtime env) and register it as an ONNX model version."""
import json, os, sys, tempfile
from pathlib import Path

import lightgbm
import numpy as np
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer

from aicloud.artifacts.format import MODEL_FORMAT
from aicloud.training import log_metric, register_model

print("python", sys.executable, "lightgbm", lightgbm.__version__, "from", lightgbm.__file__, flush=True)
X, y = load_breast_cancer(return_X_y=True)
X = X.astype(np.float32)
model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(X[:400], y[:400])
accuracy = float((model.predict(X[400:]) == y[400:]).mean())
log_metric("accuracy", accuracy)
types = [("input", FloatTensorType([None, X.shape[1]]))]
onnx_model = convert_lightgbm(model, initial_types=types, zipmap=False)
folder = Path(tempfile.mkdtemp())
(folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
signature = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, X.shape[1]]}]}
config = {"format": MODEL_FORMAT, "architecture": {"type": "onnx"}, "signature": signature}
(folder / "config.json").write_text(json.dumps(config))
register_model(folder, name=os.environ["MODEL_NAME"], metrics={"accuracy": accuracy})
print(f"registered with accuracy {accuracy:.3f}", flush=True)
'''

SERVICE = """
import sys

import tabulate

from aicloud import Service, handler


class Where(Service):
    @handler
    def where(self, module: str) -> dict:
        return {"python": sys.executable, module: sys.modules[module].__file__}
"""


def _envs(server: ServerProcess) -> list[Path]:
    """Every entry of every workspace's env cache."""
    root = server.home / "envs"
    return [e for ws in root.iterdir() for e in ws.iterdir()] if root.is_dir() else []


def test_a_lightgbm_job_builds_its_env_registers_and_a_second_hits_the_cache(
    server: ServerProcess, client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(TRAIN)
    name = unique("lgbm")
    job = client.jobs.run(
        command="python train.py", code=code, env={"MODEL_NAME": name}, requirements=LGBM
    ).wait(timeout=BUILD_TIMEOUT, progress=True)  # the bar shows the build phase
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    assert "[aicloud] runtime env" in logs and "building (2 requirements)" in logs and "built in" in logs
    (line,) = [x for x in logs.splitlines() if x.startswith("python ")]
    assert line.count("/envs/") == 2, line  # the job's python and its lightgbm are the env's
    assert "Requirement already satisfied: numpy" in logs  # the base's numpy is reused, not installed
    version = job.model_version
    assert version is not None and version.name == name
    assert job.info.spec["runtime_env"] == {"requirements": LGBM, "python": None}

    # the same spec from a job file (requirements_file relative to it) through the CLI: cached
    (tmp_path / "requirements.txt").write_text("# the model's packages\nonnxmltools\n\nlightgbm  # trees\n")
    spec = {"command": "python train.py", "env": {"MODEL_NAME": name}, "code_path": "code"}
    spec["runtime_env"] = {"requirements_file": "requirements.txt"}
    (tmp_path / "job.yaml").write_text(json.dumps({"kind": "command", "spec": spec}))
    out = run_cli(server, "job", "run", "-f", str(tmp_path / "job.yaml"), "--no-wait", "-o", "json")
    again = client.jobs.get(json.loads(out.stdout)["id"]).wait(timeout=BUILD_TIMEOUT)
    logs = again.logs()
    assert again.status == "succeeded", logs[-3000:]
    assert "cached (" in logs and "building" not in logs
    assert again.model_version is not None and again.model_version.version == version.version + 1


def test_a_spec_that_cannot_resolve_fails_with_pips_message_and_leaves_no_env(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "never.py").write_text("print('user code ran')\n")
    missing = "no-such-package-aicloud-xyz==1.0"
    job = client.jobs.run(command="python never.py", code=tmp_path, requirements=[missing])
    job.wait(timeout=BUILD_TIMEOUT)
    assert job.status == "failed"
    message = job.info.message or ""
    assert "build failed" in message and "no-such-package-aicloud-xyz" in message, message
    assert "No matching distribution" in message or "Could not find a version" in message, message
    assert "user code ran" not in job.logs()
    key = spec_hash([missing], f"{sys.version_info.major}.{sys.version_info.minor}", f"aicloud {__version__}")
    left = [e.name for e in _envs(server) if e.name.startswith(key)]
    assert left == [f"{key}.lock"], left  # no env, no half-built folder


def test_bad_runtime_envs_are_422_naming_the_field(http: httpx.Client) -> None:
    cases = [
        ({"requirements": ["-e ."]}, "spec.runtime_env.requirements"),
        ({"requirements": ["--index-url=https://evil.example/simple", "x"]}, "spec.runtime_env.requirements"),
        ({"python": "banana"}, "spec.runtime_env.python"),
        ({"requirements": [], "pip_args": ["-U"]}, "spec.runtime_env.pip_args"),
    ]
    for runtime_env, field in cases:
        body = {"kind": "command", "spec": {"command": "true", "runtime_env": runtime_env}}
        err = assert_error(http.post("/api/v1/jobs", json=body), 422)
        assert field in json.dumps(err), (runtime_env, err)
    body = {"name": "bad-env", "model": "m", "runtime_env": {"python": "x"}}
    r = http.post("/api/v1/deployments", json=body)
    assert "runtime_env.python" in json.dumps(assert_error(r, 422))


def test_a_service_imports_a_package_of_its_runtime_env(
    server: ServerProcess, client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "where.py").write_text(SERVICE)
    (tmp_path / "requirements.txt").write_text("tabulate\n")
    name = unique("renv-svc")
    file = tmp_path / "deploy.yaml"
    file.write_text(
        f"name: {name}\nservice: svc\nentrypoint: where.py:Where\nruntime_env:\n"
        "  requirements_file: requirements.txt\n"
    )
    out = run_cli(server, "deploy", "create", "-f", str(file), "--no-wait", "-o", "json")
    assert json.loads(out.stdout)["spec"]["runtime_env"]["requirements"] == ["tabulate"]
    dep = client.deployments.get(name).wait_ready(timeout=BUILD_TIMEOUT)
    seen = dep.call("where", {"module": "tabulate"})
    assert "/envs/" in seen["python"] and "/envs/" in seen["tabulate"], seen
    dep.delete()


def test_a_replica_whose_env_cannot_build_fails_the_deployment_with_pips_message(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "where.py").write_text(SERVICE)
    name = unique("renv-bad")
    dep = client.deployments.create(
        name,
        service=tmp_path / "svc",
        entrypoint="where.py:Where",
        requirements=["no-such-package-aicloud-xyz"],
    )
    with pytest.raises(AicloudError) as exc:
        dep.wait_ready(timeout=BUILD_TIMEOUT)
    assert "build failed" in str(exc.value) and "no-such-package-aicloud-xyz" in str(exc.value), exc.value
    dep.delete()


OTHER_PYTHON = "3.12" if sys.version_info[:2] != (3, 12) else "3.11"


@pytest.mark.skipif(other_python(OTHER_PYTHON) is None, reason=f"no python{OTHER_PYTHON} here")
def test_a_job_on_another_python_minor_runs_aicloud_and_its_requirements(
    client: Client, tmp_path: Path
) -> None:
    script = "import sys, aicloud, tabulate\nprint('on', sys.version.split()[0], sys.executable)\n"
    (tmp_path / "which.py").write_text(
        script + "from aicloud.training import log_metric\nlog_metric('x', 1.0)\n"
    )
    job = client.jobs.run(
        command="python which.py",
        code=tmp_path,
        runtime_env={"python": OTHER_PYTHON, "requirements": ["tabulate"]},
    ).wait(timeout=BUILD_TIMEOUT)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    (line,) = [x for x in logs.splitlines() if x.startswith("on ")]
    assert line.startswith(f"on {OTHER_PYTHON}.") and "/envs/" in line, line
    assert client.runs.metrics(job.run_id or "", "x")["x"]["values"] == [1.0]


def test_a_python_that_is_not_installed_fails_saying_which_are(client: Client, tmp_path: Path) -> None:
    (tmp_path / "never.py").write_text("print('user code ran')\n")
    job = client.jobs.run(command="python never.py", code=tmp_path, runtime_env={"python": "3.99"})
    job.wait(timeout=BUILD_TIMEOUT)
    assert job.status == "failed"
    message = job.info.message or ""
    assert "python 3.99 is not installed on this node; installed: " in message, message
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in message.split("installed: ")[1]


@pytest.mark.skipif(sandbox_unavailable() is not None, reason="workloads run unsandboxed here")
def test_a_workload_sees_its_workspaces_env_cache_and_nothing_else_of_the_home(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    other = server.home / "envs" / "ws_someone_else"
    other.mkdir(parents=True, exist_ok=True)
    (other / "secret-env").mkdir(exist_ok=True)
    probe = (
        "import os\nenvs = os.environ['AICLOUD_ENVS_DIR']\nhome = os.path.dirname(os.path.dirname(envs))\n"
        "print('seen', sorted(os.listdir(os.path.dirname(envs))), sorted(os.listdir(home)))\n"
    )
    (tmp_path / "probe.py").write_text(probe)
    job = client.jobs.run(command="python probe.py", code=tmp_path, runtime_env={"requirements": []})
    job.wait(timeout=BUILD_TIMEOUT)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    (line,) = [x for x in logs.splitlines() if x.startswith("seen ")]
    assert "ws_someone_else" not in line and "aicloud.db" not in line and "master.key" not in line, line
    assert line.endswith("['envs']"), line
