"""Drift reports over real HTTP: two uploaded versions (digits, one shifted) through the API, the SDK
and the CLI; unknown datasets, another workspace's dataset and bad fields refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest

from aicloud import Client
from aicloud.errors import NotFoundError, ValidationError
from aicloud.testing.server import ServerProcess

from helpers import assert_error, digits_csv


def _versions(client: Client, tmp_path: Path, name: str) -> tuple[str, str, str]:
    """``name:1`` (digits), ``name:2`` (the same rows) and ``name:3`` (half the pixels shifted, a
    text column changed, a column dropped and one added)."""
    path = digits_csv(tmp_path / "digits.csv")
    frame = pd.read_csv(path)
    frame["kind"] = ["even" if v % 2 == 0 else "odd" for v in frame["label"]]
    frame.to_csv(path, index=False)
    client.datasets.create(name, path)
    client.datasets.create(name, path)
    shifted = frame.copy()
    pixels = [c for c in frame.columns if c.startswith("pixel_")]
    for col in pixels[: len(pixels) * 3 // 4]:
        shifted[col] = shifted[col] + 6
    shifted["kind"] = "odd"
    shifted = shifted.drop(columns=["label"]).assign(extra=1.0)
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    client.datasets.create(name, tmp_path / "shifted.csv")
    return f"{name}:1", f"{name}:2", f"{name}:3"


def test_drift_report_api_sdk_and_cli(
    client: Client, http: httpx.Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("drift")
    v1, v2, v3 = _versions(client, tmp_path, name)

    same = client.monitoring.drift(reference=v1, current=v2)
    assert same.drift_score == 0.0 and not same.drifted
    assert same.reference_rows == same.current_rows == 1797
    assert {c.test for c in same.columns} == {"wasserstein", "jensen_shannon"}
    assert same.reference.version == 1 and same.current.version == 2

    moved = client.monitoring.drift(reference=client.datasets.get(name, 1), current=v3)
    assert moved.drifted and moved.drift_score >= 0.5
    by_column = {c.column: c for c in moved.columns}
    assert by_column["kind"].drifted and by_column["kind"].test == "jensen_shannon"
    assert moved.only_in_reference == ["label"] and moved.only_in_current == ["extra"]
    # a pixel that is always 0 in digits and shifted by 6: drifted; an unshifted one: not
    assert by_column["pixel_0_0"].drifted and not by_column["pixel_7_7"].drifted

    raw = http.post(
        "/api/v1/monitoring/drift",
        json={"reference": v1, "current": v3, "columns": ["kind", "pixel_7_7"], "threshold": 0.5},
    )
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert sorted(c["column"] for c in body["columns"]) == ["kind", "pixel_7_7"]
    assert body["drift_score"] == 0.5 and body["drifted"] is True

    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(
        AICLOUD_HOME=str(server.home), AICLOUD_URL=server.url, AICLOUD_TOKEN=server.token, COLUMNS="200"
    )
    run = [sys.executable, "-m", "aicloud", "monitoring", "drift", v1, v3]
    table = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "jensen_shannon" in table.stdout and "drift score" in table.stdout and "drifted" in table.stdout
    as_json = subprocess.run([*run, "-o", "json"], env=env, capture_output=True, text=True, timeout=300)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["drift_score"] == moved.drift_score


def test_drift_refuses_unknown_foreign_and_bad_input(
    client: Client, http: httpx.Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("drift-err")
    v1, _, v3 = _versions(client, tmp_path, name)
    err = assert_error(
        http.post("/api/v1/monitoring/drift", json={"reference": "nope:1", "current": v1}), 404
    )
    assert err["details"][0]["field"] == "reference"
    err = assert_error(
        http.post("/api/v1/monitoring/drift", json={"reference": v1, "current": f"{name}:9"}), 404
    )
    assert err["details"][0]["field"] == "current"
    err = assert_error(
        http.post("/api/v1/monitoring/drift", json={"reference": "Bad Name!", "current": v1}), 422
    )
    assert err["details"][0]["field"] == "reference"
    for body, field in (
        ({"reference": v1, "current": v3, "threshold": 0}, "threshold"),
        ({"reference": v1, "current": v3, "columns": ["no-such-column"]}, "columns"),
        ({"reference": v1, "current": v3, "window": "1h"}, "window"),
        ({"reference": v1}, "current"),
    ):
        err = assert_error(http.post("/api/v1/monitoring/drift", json=body), 422)
        assert field in json.dumps(err["details"]), err
    with pytest.raises(NotFoundError):
        client.monitoring.drift(reference=v1, current="nope")
    with pytest.raises(ValidationError):
        client.monitoring.drift(reference=v1, current=v3, columns=["no-such-column"])

    other = client.workspaces.create(f"drift-{int(time.time() * 1000) % 10**8}").admin_token.token
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {other}"}, timeout=60
    ) as stranger:
        err = assert_error(
            stranger.post("/api/v1/monitoring/drift", json={"reference": v1, "current": v3}), 404
        )
        assert err["details"][0]["field"] == "reference"
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        assert (
            anonymous.post("/api/v1/monitoring/drift", json={"reference": v1, "current": v3}).status_code
            == 401
        )
