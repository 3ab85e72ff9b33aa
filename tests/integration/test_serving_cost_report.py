"""Serving and storage costs in `GET /usage`, the SDK and `aicloud usage`: a real server with
prices, a Service deployment serving N calls, a dataset held; another workspace sees none of it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from test_cli import run_cli

from aicloud import Client
from aicloud.entities.usage import GIB
from aicloud.server.services.usage_costs import MONTH_SECONDS
from aicloud.testing.server import ServerProcess

from helpers import assert_error, small_csv

PRICES = {"cpu_hour": 3.6, "gpu_hour": 40.0, "gb_hour": 1.8, "gb_month": 7.5}
CALLS = 7
SERVICE = """
from aicloud import Service, handler


class Echo(Service):
    @handler
    def echo(self, value: int) -> dict:
        return {"value": value}
"""


@dataclass
class Served:
    server: ServerProcess
    deployment: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {
        "AICLOUD_PRICE_CPU_HOUR": str(PRICES["cpu_hour"]),
        "AICLOUD_PRICE_GPU_HOUR": str(PRICES["gpu_hour"]),
        "AICLOUD_PRICE_GB_HOUR": str(PRICES["gb_hour"]),
        "AICLOUD_PRICE_GB_MONTH": str(PRICES["gb_month"]),
        "AICLOUD_CURRENCY": "EUR",
    }
    home = tmp_path_factory.mktemp("serving-cost-home")
    server = ServerProcess(home, env=env).start()
    try:
        svc = home / "svc"
        svc.mkdir()
        (svc / "echo.py").write_text(SERVICE)
        with Client(url=server.url, token=server.token) as admin:
            dep = admin.deployments.create(
                "echo-cost", service=svc, entrypoint="echo.py:Echo", cpus=2, memory="512Mi"
            ).wait_ready(timeout=180)
            for i in range(CALLS):
                assert dep.call("echo", {"value": i}) == {"value": i}
        yield Served(server, "echo-cost")
    finally:
        server.stop()


def test_a_deployment_costs_its_replica_hours_and_its_calls(served: Served) -> None:
    with Client(url=served.server.url, token=served.server.token) as admin:
        report = admin.usage()
    assert report.serving is not None and report.storage is not None
    (row,) = [r for r in report.serving.rows if r.deployment == served.deployment]
    assert row.replicas >= 1 and row.replica_hours > 0 and row.requests >= CALLS
    assert row.cpu_hours == pytest.approx(2 * row.replica_hours, rel=1e-6, abs=1e-8)
    assert row.gb_hours == pytest.approx(0.5 * row.replica_hours, rel=1e-6, abs=1e-8)
    assert row.gpu_hours == 0
    expected = row.cpu_hours * PRICES["cpu_hour"] + row.gb_hours * PRICES["gb_hour"]
    assert row.cost == pytest.approx(expected, rel=1e-6, abs=1e-8) and row.cost > 0
    assert row.cost_per_1k == pytest.approx(row.cost * 1000 / row.requests, rel=1e-6, abs=1e-8)
    assert report.serving.total.cost == pytest.approx(
        sum(r.cost for r in report.serving.rows), rel=1e-6, abs=1e-8
    )
    assert report.total_cost == pytest.approx(
        report.total.cost + report.serving.total.cost + report.storage.cost, rel=1e-6
    )


def test_storage_is_priced_by_size_and_time(served: Served, tmp_path: Path) -> None:
    with Client(url=served.server.url, token=served.server.token) as admin:
        before = admin.usage().storage
        assert before is not None and before.price_gb_month == PRICES["gb_month"]
        admin.datasets.create("cost-data", small_csv(tmp_path / "d.csv", rows=3000))
        after = admin.usage().storage
    assert after is not None and after.blobs > before.blobs and after.bytes > before.bytes
    assert after.cost > 0 and after.gb_months > 0
    # never more than every byte held for the whole life of the server (well under an hour)
    assert after.gb_months <= after.bytes / GIB * 3600 / MONTH_SECONDS
    assert after.cost == pytest.approx(after.gb_months * PRICES["gb_month"], rel=1e-9)
    # one second in which every blob was held: GB-months are exactly proportional to the bytes
    start = datetime.now(UTC)  # after the upload
    end = start + timedelta(seconds=1)
    time.sleep(max((end - datetime.now(UTC)).total_seconds(), 0) + 0.1)
    with Client(url=served.server.url, token=served.server.token) as admin:
        second = admin.usage(since=start, until=end).storage
    assert second is not None and second.bytes == after.bytes
    assert second.gb_months == pytest.approx(after.bytes / GIB / MONTH_SECONDS, rel=1e-9)


def test_another_workspace_sees_none_of_it(served: Served) -> None:
    with Client(url=served.server.url, token=served.server.token) as admin:
        other = admin.workspaces.create("cost-elsewhere")
    with Client(url=served.server.url, token=other.admin_token.token) as elsewhere:
        report = elsewhere.usage()
    assert report.serving is not None and report.serving.rows == [] and report.serving.total.cost == 0
    assert report.storage is not None and report.storage.blobs == 0 and report.storage.cost == 0
    assert report.total_cost == 0


def test_the_cli_and_the_api(served: Served) -> None:
    out = run_cli(served.server, "usage").stdout
    assert "serving" in out and served.deployment in out and "storage:" in out and "total cost" in out
    body = json.loads(run_cli(served.server, "usage", "-o", "json").stdout)
    assert body["serving"]["rows"][0]["deployment"] == served.deployment and "storage" in body
    headers = {"Authorization": f"Bearer {served.server.token}"}
    with httpx.Client(base_url=served.server.url, headers=headers, timeout=60) as http:
        assert_error(http.get("/api/v1/usage", params={"since": "yesterday"}), 422)
        assert_error(http.get("/api/v1/usage", params={"since": "2030-01-02", "until": "2030-01-01"}), 422)
        # a period before anything ran: no replica-hours, no GB-months
        old = http.get("/api/v1/usage", params={"until": "2001-01-01"}).json()
        assert old["serving"]["rows"] == [] and old["storage"]["gb_months"] == 0
