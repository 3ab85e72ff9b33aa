"""Canary deployments end to end: two versions of a model behind one endpoint with weights, their
statistics side by side, then promote and roll back, under load, with no failed request. Real
server, replicas, gateway, SDK and CLI."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_cli import run_cli

from aicloud import Client
from aicloud.client import Deployment
from aicloud.testing.server import ServerProcess

from model_files import mlp_folder

SIG = {"inputs": [{"name": n, "dtype": "float64"} for n in "ab"], "outputs": [{"name": "label"}]}


def _register(client: Client, tmp: Path, name: str, labels: list[str], seed: int) -> int:
    """A 2-feature classifier whose labels tell which version answered; returns its version number."""
    config = {"task": "tabular-classification", "signature": SIG, "labels": labels}
    folder, _ = mlp_folder(tmp / f"v{seed}", 2, [4], 2, config, seed=seed)
    files = {p.name: client.blobs.upload(p.read_bytes()) for p in sorted(Path(folder).iterdir())}
    saved = json.loads((Path(folder) / "config.json").read_text())
    return int(
        client.models.register_version(name, files, signature=SIG, config=saved, metrics={})["version"]
    )


class Load:
    """Two threads predicting through the gateway; which version answered (by its labels), and
    every non-200 answer."""

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.server, self.name = server, name
        self.failures: list[str] = []
        self.seen: Counter[str] = Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.server.token}"}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=60) as h:
            while not self.stop.is_set():
                r = h.post(f"/v1/endpoints/{self.name}/predict", json={"inputs": [[0.3, -0.2], [1.5, 0.7]]})
                if r.status_code == 200:
                    for label in r.json()["outputs"]:
                        self.seen[str(label).split("-")[0]] += 1
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")

    def window(self, seconds: float) -> Counter[str]:
        """What answered during the next ``seconds``."""
        before = self.seen.copy()
        time.sleep(seconds)
        return self.seen - before

    def finish(self) -> list[str]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        return self.failures


def _eventually(check: Callable[[], bool], timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def canary_model(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> Iterator[str]:
    name = unique("canary")
    assert _register(client, tmp_path, name, ["old-0", "old-1"], seed=1) == 1
    assert _register(client, tmp_path, name, ["new-0", "new-1"], seed=2) == 2
    yield name


def _ready_ids(dep: Deployment, version: int) -> set[str]:
    return {r.id for r in dep.refresh().info.replicas if r.version == version and r.state.value == "ready"}


def test_canary_split_promote_and_rollback_with_no_failed_request(
    server: ServerProcess, client: Client, canary_model: str
) -> None:
    name = canary_model
    dep = client.deployments.create(name, model=f"{name}:1").wait_ready(timeout=120)
    load = Load(server, name)
    try:
        assert _eventually(lambda: load.seen["old"] > 0, 60)
        # a canary from the CLI: version 2 gets a replica of its own and half the calls
        out = run_cli(server, "deploy", "update", name, "--traffic", "1=50,2=50", "--timeout", "180")
        assert "v1 50% · v2 50%" in out.stdout, out.stdout
        assert _ready_ids(dep, 1) and _ready_ids(dep, 2)
        answered = load.window(3.0)
        assert answered["old"] > 0 and answered["new"] > 0, answered
        metrics = {v["version"]: v for v in dep.metrics()["versions"]}
        assert metrics[1]["percent"] == 50 and metrics[2]["percent"] == 50
        assert metrics[1]["requests"] > 0 and metrics[2]["requests"] > 0
        assert metrics[1]["errors"] == 0 and metrics[2]["errors"] == 0
        assert metrics[2]["p50_ms"] is not None and metrics[2]["window"]["rate_per_s"] > 0
        history = dep.metrics()["history"]  # by minute, all versions together
        assert history and history[-1]["requests"] > 0 and history[-1]["ready"] >= 2, history
        shown = run_cli(server, "deploy", "show", name).stdout
        assert "versions" in shown and "v1" in shown and "v2" in shown and "50%" in shown, shown

        # promote: the canary's replica stays (no restart), version 1's is drained
        canary_replicas = _ready_ids(dep, 2)
        out = run_cli(server, "deploy", "promote", name, "--timeout", "180")
        info = dep.refresh().info
        assert info.model_version == 2 and info.traffic is None and info.spec["model"] == f"{name}:2"
        assert _ready_ids(dep, 2) == canary_replicas
        assert all(r.version == 2 for r in info.replicas if r.state.value != "failed"), info.replicas
        answered = load.window(2.0)
        assert answered["new"] > 0 and answered["old"] == 0, answered

        # another canary, rolled back: version 1's replica goes again, version 2 keeps every call
        dep.update(traffic={"2": 90, "1": 10})
        assert _eventually(lambda: bool(_ready_ids(dep, 1)))
        assert _eventually(lambda: load.seen["old"] > 0, 60)
        run_cli(server, "deploy", "rollback", name, "--timeout", "180")
        info = dep.refresh().info
        assert info.traffic is None and info.model_version == 2
        assert all(r.version == 2 for r in info.replicas if r.state.value != "failed"), info.replicas
        answered = load.window(2.0)
        assert answered["new"] > 0 and answered["old"] == 0, answered
    finally:
        failures = load.finish()
    assert failures == [], failures[:5]
    dep.delete()


def test_promote_moves_the_alias_of_a_tracking_deployment(
    server: ServerProcess, client: Client, http: httpx.Client, canary_model: str
) -> None:
    name = canary_model
    client.models.set_alias(name, "prod", 1)
    dep = client.deployments.create(name, model=f"{name}@prod", traffic={"1": 80, "2": 20})
    dep.wait_ready(timeout=120)
    assert _eventually(lambda: bool(_ready_ids(dep, 2)))
    dep.promote()
    assert dep.info.spec["model"] == f"{name}@prod" and dep.info.model_version == 2
    assert client.models.get(f"{name}@prod").version == 2
    assert _eventually(lambda: not _ready_ids(dep, 1) and bool(_ready_ids(dep, 2)))
    dep.delete()


def test_bad_canary_requests_are_refused_and_change_nothing(
    server: ServerProcess, client: Client, http: httpx.Client, canary_model: str
) -> None:
    name = canary_model
    dep = client.deployments.create(name, model=f"{name}:1", min_replicas=0)
    before = dep.refresh().info
    for body, field in (
        ({"traffic": {"1": 90, "9": 10}}, "traffic"),  # no such version
        ({"traffic": {"2": 100}}, "traffic"),  # leaves out the version model names
        ({"traffic": {"1": "lots"}}, "traffic"),
        ({"traffic": {"1": 0}}, "traffic"),
    ):
        r = http.patch(f"/api/v1/deployments/{name}", json=body)
        assert r.status_code == 422, r.text
        assert field in json.dumps(r.json()["error"]), r.text
    r = http.post(f"/api/v1/deployments/{name}/promote", json={})
    assert r.status_code == 409 and "no canary" in r.json()["error"]["message"], r.text
    r = http.post(f"/api/v1/deployments/{name}/rollback", json={})
    assert r.status_code == 409, r.text
    http.patch(f"/api/v1/deployments/{name}", json={"traffic": {"1": 90, "2": 10}}).raise_for_status()
    r = http.post(f"/api/v1/deployments/{name}/promote", json={"version": 7})
    assert r.status_code == 422 and "not in the traffic" in r.json()["error"]["message"], r.text
    r = http.post(f"/api/v1/deployments/{name}/promote", json={"versoin": 2})
    assert r.status_code == 422, r.text
    after = dep.refresh().info
    assert after.generation == before.generation and after.traffic == {"1": 90, "2": 10}
    r = http.get("/api/v1/deployments/nope-nope/metrics")
    assert r.status_code == 404
    dep.delete()
