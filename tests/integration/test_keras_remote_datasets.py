"""Multi-file datasets (docs/datasets.md): the SDK's create(name, files=[...]) and the CLI's
``aicloud dataset upload NAME FILE FILE...``, each file a version of ``<name>-<stem>``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aicloud import Client
from aicloud.errors import ValidationError
from aicloud.testing.server import ServerProcess


def _files(tmp_path: Path) -> list[Path]:
    out = []
    for stem, rows in (("train", 5), ("test", 2)):
        path = tmp_path / f"{stem}.csv"
        path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(rows)))
        out.append(path)
    return out


def test_create_with_files(client: Client, tmp_path: Path, unique: Any) -> None:
    name = unique("parts")
    parts = client.datasets.create(name, files=_files(tmp_path))
    assert sorted(parts) == ["test", "train"]
    assert (parts["train"].name, parts["train"].version, parts["train"].num_rows) == (f"{name}-train", 1, 5)
    assert parts["test"].ref == f"{name}-test:1" and parts["test"].num_rows == 2
    again = client.datasets.create(name, files=_files(tmp_path))
    assert again["train"].version == 2


def test_create_with_files_refuses_before_uploading(client: Client, tmp_path: Path, unique: Any) -> None:
    name = unique("parts")
    train, _ = _files(tmp_path)
    with pytest.raises(ValidationError, match="no such file"):
        client.datasets.create(name, files=[train, tmp_path / "missing.csv"])
    other = tmp_path / "x"
    other.mkdir()
    (other / "train.csv").write_text("a\n1\n")
    with pytest.raises(ValidationError, match="stem of its own"):
        client.datasets.create(name, files=[train, other / "train.csv"])
    assert name + "-train" not in {d.name for d in client.datasets.list(limit=1000)}


def test_cli_upload_of_several_files(server: ServerProcess, tmp_path: Path, unique: Any) -> None:
    name = unique("cliparts")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(server.home), AICLOUD_URL=server.url, COLUMNS="200")
    args = [sys.executable, "-m", "aicloud", "dataset", "upload", name, *map(str, _files(tmp_path))]
    proc = subprocess.run([*args, "-o", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["train"]["name"] == f"{name}-train" and out["test"]["num_rows"] == 2
    table = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and f"{name}-test" in table.stdout, table.stdout + table.stderr
