"""The README path: `aicloud up`, `aicloud demo`, `aicloud down`, as real subprocesses."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

from aicloud.wire.tcp import free_port


def test_up_demo_down(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(tmp_path / "home"), AICLOUD_PORT=str(free_port()), COLUMNS="200")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "aicloud", *args], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    try:
        assert "is up" in cli("up").stdout
        assert "already running" in cli("up").stdout
        out = cli("demo").stdout
        assert "digits v1" in out and "breast-cancer v1" in out
        assert "1797 rows" in out and "569 rows" in out
        assert "digits-train:1 (1437 rows)" in out and "digits-test:1 (360 rows)" in out
        assert "mean" in out and "distinct" in out
        # second part: both models trained, registered, aliased, with lineage
        rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 5}
        for model in ("digits", "breast-cancer"):
            accuracy = float(rows[model].split("│")[4])
            assert accuracy >= 0.95, rows[model]
        assert "digits v1  aliases: production" in out
        assert "← train: dataset digits-train:1 (1437 rows" in out and "← split of digits:1" in out
        # third part: the digits endpoint answers the 360 held-out rows
        assert "/v1/endpoints/digits ready in" in out
        served = next(line for line in out.splitlines() if line.count("│") == 4 and " ms " in line)
        endpoint_accuracy = float(served.split("│")[1])
        assert endpoint_accuracy == float(rows["digits"].split("│")[4])
        # fourth part: zoo/minilm pulled, fine-tuned (head) on the intent set, its endpoint answers
        assert "zoo/minilm: pulled in" in out
        assert "intents-train:1 (240 rows) + intents-test:1 (80 rows)" in out
        line = next(line for line in out.splitlines() if line.startswith("intents v1 (head on zoo/minilm)"))
        assert float(line.split("accuracy ")[1].split(",")[0]) >= 0.9, line
        samples = resources.files("aicloud") / "data" / "samples" / "intents.csv"
        intents = {row["label"] for row in csv.DictReader(io.StringIO(samples.read_text()))}
        cells = [row.split("│") for row in out.splitlines() if row.count("│") == 4]
        answers = [c[2].strip() for c in cells if c[2].strip() in intents]
        assert len(answers) == 6, out[-3000:]  # the six questions, each answered with an intent
        assert "reset_password" in answers and "opening_hours" in answers
        status = cli("status").stdout
        assert "workspace default" in status
    finally:
        cli("down")
    assert not (tmp_path / "home" / "server.pid").exists()
