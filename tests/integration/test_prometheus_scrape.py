"""Prometheus scraping a real control plane: /metrics and the replica proxy behind the scrape token,
the http_sd targets endpoint, and Debian's real ``prometheus`` discovering and scraping every replica
(skipped when the binary is absent: ``make prometheus-tools`` installs it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

SERVICE = """
from aicloud import Service, handler


class Echo(Service):
    @handler
    def echo(self, text: str) -> str:
        return "echo: " + text
"""
CALLS = 7


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("prom-home")).start()
    yield proc
    with Client(url=proc.url, token=proc.token) as c:
        for d in c.deployments.list():
            d.delete()
        deadline = time.monotonic() + 30
        while c.deployments.list() and time.monotonic() < deadline:
            time.sleep(0.2)
    proc.stop()


@pytest.fixture(scope="module")
def world(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("svc")
    (folder / "echo.py").write_text(SERVICE)
    with Client(url=srv.url, token=srv.token) as c:
        dep = c.deployments.create(
            "prom-echo", service=folder, entrypoint="echo.py:Echo", min_replicas=2, max_replicas=2
        ).wait_ready(timeout=240)
        deadline = time.monotonic() + 120
        while len([r for r in dep.refresh().info.replicas if r.state == "ready"]) < 2:
            assert time.monotonic() < deadline, dep.info.replicas
            time.sleep(0.3)
        for i in range(CALLS):
            assert dep.call("echo", {"text": str(i)}) == f"echo: {i}"
        scrape = c.tokens.create("prom-scraper", role="viewer", scope="metrics").token
        replicas = [r.id for r in dep.info.replicas if r.state == "ready"]
        yield {"scrape": scrape, "replicas": replicas}


def _get(srv: ServerProcess, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(srv.url + path, headers=headers, timeout=30)


def test_metrics_need_a_token_and_count_the_calls(srv: ServerProcess, world: dict[str, Any]) -> None:
    assert _get(srv, "/metrics", None).status_code == 401
    assert _get(srv, "/api/v1/prometheus/targets", None).status_code == 401
    assert _get(srv, f"/metrics/replicas/{world['replicas'][0]}", None).status_code == 401
    assert _get(srv, "/metrics", "not-a-token").status_code == 401
    body = _get(srv, "/metrics", world["scrape"])
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain")
    text = body.text
    assert "# TYPE aicloud_gateway_requests_total counter" in text
    labels = 'deployment="prom-echo",version="",version_id="",code="200"'
    assert f"aicloud_gateway_requests_total{{{labels}}} {CALLS}" in text
    assert 'aicloud_deployment_replicas{deployment="prom-echo",state="ready"} 2' in text
    assert 'aicloud_jobs{state="running"}' in text
    assert 'aicloud_controller_passes_total{controller="deployments"}' in text
    assert 'aicloud_gateway_request_duration_seconds_bucket{deployment="prom-echo"' in text
    # the admin token scrapes too; the scrape token can do nothing else
    assert _get(srv, "/metrics", srv.token).status_code == 200
    denied = _get(srv, "/api/v1/jobs", world["scrape"])
    assert denied.status_code == 403 and "scrape token" in denied.json()["error"]["message"]
    bad = httpx.post(
        f"{srv.url}/api/v1/tokens",
        json={"name": "prom-bad", "role": "viewer", "scope": "everything"},
        headers={"Authorization": f"Bearer {srv.token}"},
        timeout=30,
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "scope"


def test_targets_list_every_replica_and_the_proxy_labels_its_samples(
    srv: ServerProcess, world: dict[str, Any]
) -> None:
    groups = _get(srv, "/api/v1/prometheus/targets", world["scrape"]).json()
    paths = {g["labels"]["__metrics_path__"] for g in groups}
    assert paths == {f"/metrics/replicas/{r}" for r in world["replicas"]}
    assert all(g["targets"] == [srv.url.split("://", 1)[1]] for g in groups)
    assert {g["labels"]["instance"] for g in groups} == {f"prom-echo/{r}" for r in world["replicas"]}
    replica = world["replicas"][0]
    text = _get(srv, f"/metrics/replicas/{replica}", world["scrape"]).text
    assert f'aicloud_inflight_requests{{deployment="prom-echo",replica="{replica}",version=""}}' in text
    assert _get(srv, "/metrics/replicas/rep_nope", world["scrape"]).status_code == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_prometheus_discovers_and_scrapes_every_replica(
    srv: ServerProcess, world: dict[str, Any], tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus binary is not installed: `make prometheus-tools` (apt) installs it")
    host = srv.url.split("://", 1)[1]
    (tmp_path / "token").write_text(world["scrape"])
    config = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: aicloud
    authorization: {{type: Bearer, credentials_file: {tmp_path / "token"}}}
    static_configs: [{{targets: ["{host}"]}}]
  - job_name: aicloud-replicas
    authorization: {{type: Bearer, credentials_file: {tmp_path / "token"}}}
    http_sd_configs:
      - url: {srv.url}/api/v1/prometheus/targets
        refresh_interval: 1s
        authorization: {{type: Bearer, credentials_file: {tmp_path / "token"}}}
"""
    (tmp_path / "prometheus.yml").write_text(config)
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                active = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
                up = httpx.get(f"{api}/query", params={"query": "up"}, timeout=5).json()["data"]["result"]
                calls = httpx.get(
                    f"{api}/query",
                    params={
                        "query": 'sum(aicloud_gateway_requests_total{deployment="prom-echo",code="200"})'
                    },
                    timeout=5,
                ).json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                active, up, calls = [], [], []
            replicas = {t["discoveredLabels"].get("__meta_aicloud_replica") for t in active} - {None}
            healthy = [t for t in active if t["health"] == "up"]
            done = (
                replicas == set(world["replicas"])
                and len(healthy) == len(active) == 3
                and len(up) == 3
                and calls
                and float(calls[0]["value"][1]) == CALLS
            )
            if done:
                break
            seen = [(t["scrapeUrl"][-40:], t["health"], t["lastError"][:80]) for t in active]
            ups = [(u["metric"].get("instance"), u["value"][1]) for u in up]
            assert time.monotonic() < deadline, (
                replicas,
                world["replicas"],
                seen,
                ups,
                calls,
                log_tail(tmp_path),
            )
            time.sleep(1)
        per_replica = httpx.get(
            f"{api}/query", params={"query": 'aicloud_inflight_requests{deployment="prom-echo"}'}, timeout=5
        ).json()["data"]["result"]
        assert {r["metric"]["replica"] for r in per_replica} == set(world["replicas"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def log_tail(folder: Path) -> str:
    lines = (folder / "prometheus.log").read_text().splitlines()
    return "\n".join(line for line in lines if "level=info" not in line)[-1500:]
