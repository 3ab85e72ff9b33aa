"""The `aicloud` CLI as a user runs it: a real subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from aicloud.testing.server import ServerProcess

from helpers import digits_csv


def run_cli(
    srv: ServerProcess, *args: str, stdin: str | None = None, token: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(srv.home), AICLOUD_URL=srv.url, COLUMNS="200")
    if token:
        env["AICLOUD_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-m", "aicloud", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_dataset_commands(server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]) -> None:
    name = unique("cli")
    path = digits_csv(tmp_path / "digits.csv")
    up = run_cli(server, "dataset", "upload", name, str(path))
    assert (
        f"{name}" in up.stdout
        and "1797 rows" in up.stdout
        and "pixel_0_0" in up.stdout
        and "mean" in up.stdout
    )
    shown = json.loads(run_cli(server, "dataset", "show", f"{name}:1", "-o", "json").stdout)
    assert shown["num_rows"] == 1797 and shown["version"] == 1
    listed = json.loads(run_cli(server, "dataset", "list", "--output", "json").stdout)
    assert name in {d["name"] for d in listed}
    split = json.loads(run_cli(server, "dataset", "split", name, "--stratify", "label", "-o", "json").stdout)
    assert split["train"]["num_rows"] + split["test"]["num_rows"] == 1797
    out = tmp_path / "back.csv"
    run_cli(server, "dataset", "download", f"{name}:1", str(out))
    assert out.read_bytes() == path.read_bytes()
    versions = json.loads(run_cli(server, "dataset", "versions", name, "-o", "json").stdout)
    assert [v["version"] for v in versions] == [1]


def test_secret_and_token_commands(server: ServerProcess, unique: Callable[[str], str]) -> None:
    secret = unique("S").replace("-", "_")
    run_cli(server, "secret", "create", secret, stdin="hunter2-value\n")
    listed = run_cli(server, "secret", "list", "-o", "json").stdout
    assert secret in listed and "hunter2" not in listed
    created = json.loads(
        run_cli(server, "token", "create", unique("ci"), "--role", "viewer", "-o", "json").stdout
    )
    assert created["role"] == "viewer" and created["token"].startswith("aic_")
    denied = run_cli(server, "secret", "create", "X", "--value", "y", token=created["token"], check=False)
    assert denied.returncode == 1
    assert "permission_denied" in denied.stderr and "Traceback" not in denied.stderr
    run_cli(server, "token", "delete", created["id"])


def test_errors_are_one_line_not_tracebacks(server: ServerProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2,3\n")
    proc = run_cli(server, "dataset", "upload", "bad", str(bad), check=False)
    assert proc.returncode == 1
    assert "invalid_data" in proc.stderr and "Traceback" not in proc.stderr
    missing = run_cli(server, "dataset", "show", "does-not-exist", check=False)
    assert missing.returncode == 1 and "not_found" in missing.stderr


def test_cli_without_a_server_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(tmp_path), AICLOUD_URL="http://127.0.0.1:9", AICLOUD_TOKEN="x")
    proc = subprocess.run(
        [sys.executable, "-m", "aicloud", "dataset", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "aicloud up" in proc.stderr
