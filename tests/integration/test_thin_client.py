"""`pip install aicloud` is the SDK and the CLI only: a fresh venv with the base install (no extra)
talks to the real control plane, and neither PyTorch nor the server's packages are in it.

The venv is built once for this file with ``python -m venv`` + ``pip install <a copy of the
repository>`` (the copy keeps pip's build folders out of the work tree). With this machine's
package index that takes about 20 s on an idle 2-core machine; the pip cache makes a second run
faster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aicloud.testing.server import ServerProcess
from aicloud.wire.tcp import free_port

from helpers import small_csv

REPO = Path(__file__).resolve().parents[2]
#: what must not come with the base install: the workload runtime and the control plane
HEAVY = ("torch", "fastapi", "uvicorn", "sqlalchemy", "numpy", "pandas", "onnxruntime", "optuna", "psycopg")

pytestmark = pytest.mark.timeout(600)


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the project venv's traces and without AICLOUD_*."""
    drop = ("AICLOUD_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(COLUMNS="200", **extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("thin-client")
    project = root / "project"
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=_clean_env())
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(project)],
        env=_clean_env(),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


def run(
    venv: Path, cwd: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        env=env or _clean_env(AICLOUD_HOME=str(cwd / "home")),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_base_install_has_no_torch_and_no_server(venv: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, sys; import aicloud, aicloud.client, aicloud.cli.main;"
        f" print(json.dumps([m for m in {HEAVY!r} if importlib.util.find_spec(m) or m in sys.modules]))"
    )
    out = run(venv, tmp_path, "python", "-c", probe)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    # and the package came from the venv, not from the work tree
    where = run(venv, tmp_path, "python", "-c", "import aicloud; print(aicloud.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout


def test_cli_help_works_without_extras(venv: Path, tmp_path: Path) -> None:
    for args in ((), ("dataset",), ("deploy",), ("server",)):
        out = run(venv, tmp_path, "aicloud", *args, "--help")
        assert out.returncode == 0, (args, out.stdout + out.stderr)
        assert "Usage" in out.stdout, args


def test_sdk_and_cli_against_the_server(
    venv: Path, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    env = _clean_env(AICLOUD_HOME=str(tmp_path / "home"), AICLOUD_URL=server.url, AICLOUD_TOKEN=server.token)
    name = unique("thin")
    path = small_csv(tmp_path / "small.csv")
    up = run(venv, tmp_path, "aicloud", "dataset", "upload", name, str(path), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    listed = run(venv, tmp_path, "aicloud", "dataset", "list", "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert name in {d["name"] for d in json.loads(listed.stdout)}
    sdk = (
        "import sys; from aicloud import Client;"
        "c = Client(sys.argv[1], sys.argv[2]);"
        "print(sorted(d.name for d in c.datasets.list()));"
        "print(c.datasets.get(sys.argv[3]).num_rows)"
    )
    out = run(venv, tmp_path, "python", "-c", sdk, server.url, server.token, name, env=_clean_env())
    assert out.returncode == 0, out.stderr
    names, rows = out.stdout.splitlines()
    assert repr(name) in names and rows == "50"


def test_server_commands_say_which_extra(venv: Path, tmp_path: Path) -> None:
    env = _clean_env(AICLOUD_HOME=str(tmp_path / "home"), AICLOUD_PORT=str(free_port()))
    for args in (("server",), ("up", "--timeout", "5"), ("admin", "migrate"), ("demo",)):
        out = run(venv, tmp_path, "aicloud", *args, env=env)
        assert out.returncode == 1, (args, out.stdout + out.stderr)
        assert "pip install 'aicloud[server]'" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stdout + out.stderr, args
    assert not (tmp_path / "home" / "server.pid").exists()  # `up` started nothing


def test_sdk_calls_that_need_an_extra_say_which(venv: Path, tmp_path: Path) -> None:
    code = (
        "from aicloud import Client\n"
        "from aicloud.client.extras import MissingExtraError\n"
        "c = Client('http://127.0.0.1:9', 'aic_x_y')\n"
        "try:\n"
        "    c.runs.compare([])\n"
        "except MissingExtraError as exc:\n"
        "    print(exc.extra, exc.missing)\n"
    )
    out = run(venv, tmp_path, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "train ['pandas']"
