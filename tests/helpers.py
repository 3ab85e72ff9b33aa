"""Data makers and assertions shared by the integration and e2e tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.testing.server import ServerProcess


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie waiting to be reaped does not."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def digits_csv(path: Path) -> Path:
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv(path, index=False)
    return path


def small_csv(path: Path, rows: int = 50) -> Path:
    pd.DataFrame(
        {"x": range(rows), "y": [i * 0.5 for i in range(rows)], "label": [i % 2 for i in range(rows)]}
    ).to_csv(path, index=False)
    return path


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the DESIGN.md error shape with this status (and code), and no stack trace."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    assert err["message"], err
    if code is not None:
        assert err["code"] == code, err
    assert "Traceback" not in response.text and 'File "' not in response.text
    return dict(err)


def assert_oip_error(response: httpx.Response, status: int) -> str:
    """The response is the Open Inference Protocol's ``{"error": "<message>"}`` with this status
    (what aicloud answers on ``/v2`` routes); returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return str(body["error"])


def split_digits(server: ServerProcess, name: str, folder: Path) -> tuple[DatasetVersion, DatasetVersion]:
    """Upload the digits as dataset ``name`` and split it 80/20 (seed 0, stratified): (train, test)."""
    with Client(url=server.url, token=server.token) as c:
        ds = c.datasets.create(name, digits_csv(folder / "digits.csv"))
        return ds.split(train_size=0.8, seed=0, stratify="label")
