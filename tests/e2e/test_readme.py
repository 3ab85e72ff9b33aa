"""The README's "Using it" walk-through runs as written: every command of its bash block (against the
test server: AICLOUD_URL/AICLOUD_TOKEN; `up` and `down` are tests/e2e/test_demo.py's), its Python
snippets, and with them every file in examples/."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aicloud import Client
from aicloud.errors import NotFoundError
from aicloud.testing.server import ServerProcess
from aicloud.wire.tcp import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Using it") : text.index("## What is here")]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _walkthrough(), flags=re.S)


def _commands() -> list[list[str]]:
    (bash,) = _blocks("bash")
    return [shlex.split(line, comments=True) for line in bash.splitlines() if line.strip()]


def test_the_walkthrough_uses_only_shipped_examples() -> None:
    shipped = {p.name for p in EXAMPLES.iterdir()}
    used = {Path(arg).name for argv in _commands() for arg in argv if arg.startswith("examples/")}
    made = {"digits.csv", "rows.json"}  # written by examples/make_data.py
    assert used - made <= shipped, used - shipped
    assert {"make_data.py", "job.yaml", "sweep.yaml", "train-job.yaml", "train.py", "service.py"} <= shipped
    # every shipped file is used by the walk-through (train.py through train-job.yaml)
    # mlflow_train.py: run outside and inside a job by tests/integration/test_mlflow_api.py
    # keras/: the seeds' Keras scripts, run as jobs by tests/integration/test_keras_seeds.py
    unused = shipped - used - {".gitignore", "deploy.yaml", "train.py", "mlflow_train.py", "keras"}
    assert not unused, f"{unused}: use them in the README's walk-through, which this file runs"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the repository's README and examples/, so the run writes nothing into the checkout."""
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("digits.csv", "rows.json"))
    return tmp_path


def test_readme_walkthrough(server: ServerProcess, client: Client, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(
        AICLOUD_URL=server.url, AICLOUD_TOKEN=server.token, AICLOUD_HOME=str(workdir / "home"), COLUMNS="200"
    )

    def run(argv: list[str], timeout: float = 600) -> str:
        if argv[0] == ".venv/bin/aicloud":
            argv = [sys.executable, "-m", "aicloud", *argv[1:]]
        elif argv[0] == ".venv/bin/python":
            argv = [sys.executable, *argv[1:]]
        proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    commands = _commands()
    assert commands[0][1:2] == ["up"] and commands[-1][1:2] == ["down"]
    ran: list[tuple[str, str]] = []

    def said(prefix: str) -> str:
        """The output of the walk-through's first command whose arguments start with ``prefix``."""
        return next(stdout for args, stdout in ran if args.startswith(prefix))

    try:
        for argv in commands[1:-1]:
            ran.append((shlex.join(argv[1:]), run(argv)))
        assert "1797 rows" in said("examples/make_data.py")
        assert "model my-digits v1" in said("job run -f examples/job.yaml")
        assert "my-digits-cnn" in said("job show my-digits-cnn")
        assert "model my-digits v1" in said("job show my-digits-cnn")
        assert "model my-digits-script v1" in said("job run -f examples/train-job.yaml")
        script = client.models.get("my-digits-script")
        assert script.metrics["train_accuracy"] > 0.8, script.metrics
        assert "model my-digits-best v1" in said("sweep create")
        predicted = json.loads(said("predict my-digits"))["outputs"]
        assert sum(p == i for i, p in enumerate(predicted)) >= 4, predicted  # rows.json: digits 0..4
        assert json.loads(said("call my-echo echo")) == "echo: hi"
        assert "replica" in said("deploy logs my-echo")

        # `deploy scale` changed the range and kept the replica (no new generation)
        dep = client.deployments.get("my-digits")
        assert dep.info.spec["max_replicas"] == 4 and dep.info.generation == 1, dep.info

        # a second `deploy create` of the name says how to change it instead
        create = next(argv for argv in commands if argv[1:4] == ["deploy", "create", "my-digits"])
        again = subprocess.run(
            [sys.executable, "-m", "aicloud", *create[1:]],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 1 and "aicloud deploy update my-digits" in again.stderr, again.stderr

        # the batched handler of examples/service.py
        lengths = run([".venv/bin/aicloud", "call", "my-echo", "lengths", "--json", '{"text": "four"}'])
        assert json.loads(lengths) == 4

        # the Python snippets, as written (the first rolls my-digits to the model it trains)
        snippets = [code for code in _blocks("python") if "from aicloud import" in code]
        assert len(snippets) == 2, snippets
        outputs = [run([".venv/bin/python", "-c", code]) for code in snippets]
        local, served = outputs[0].strip().splitlines()[-2:]
        assert local.startswith("[") and served.startswith("["), outputs[0]
        rolled = client.deployments.get("my-digits")
        assert rolled.info.spec["model"] == "my-digits@production" and rolled.info.generation == 2
        assert client.models.get("my-digits@production").version == 2
    finally:
        for name in ("my-digits", "my-echo"):
            with contextlib.suppress(NotFoundError):
                client.deployments.get(name).delete()


def test_up_on_another_port(tmp_path: Path) -> None:
    """`aicloud up --port` listens there and says how to reach it; `down` stops it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(tmp_path / "home"), COLUMNS="200")

    def cli(*args: str, **extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "aicloud", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    try:
        started = cli("up", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        assert f"is up at {url}" in started and f"export AICLOUD_URL={url}" in started
        assert "workspace default" in cli("status", AICLOUD_URL=url)
    finally:
        cli("down")
