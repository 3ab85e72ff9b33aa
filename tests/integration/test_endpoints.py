"""Deployments end to end: real control plane, real replica processes, real HTTP through the gateway."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("serving-home")).start()
    yield proc
    with Client(url=proc.url, token=proc.token) as c:
        for d in c.deployments.list():
            d.delete()
        deadline = time.monotonic() + 30
        while c.deployments.list() and time.monotonic() < deadline:
            time.sleep(0.2)
    proc.stop()


@pytest.fixture(scope="module")
def c(srv: ServerProcess) -> Iterator[Client]:
    with Client(url=srv.url, token=srv.token) as client:
        yield client


@pytest.fixture(scope="module")
def data(c: Client, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["label"] = (x[:, 0] + x[:, 1] > 0).astype(int)
    path = tmp_path_factory.mktemp("data") / "srv.csv"
    frame.to_csv(path, index=False)
    ds = c.datasets.create("srv-data", path)
    train, test = ds.split(train_size=0.8, seed=0, stratify="label")
    for seed in (0, 1):  # two versions of the model, for the rolling update
        job = c.jobs.train(
            task="tabular-classification",
            dataset=train,
            eval_dataset=test,
            target="label",
            params={"epochs": 3, "seed": seed},
            model_name="srv-mlp",
        )
        job.wait(timeout=180)
        assert job.status == "succeeded", job.logs()[-2000:]
    return frame


def replica_pids(deployment_name: str) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        if "aicloud.serving.replica" not in " ".join(proc.info["cmdline"] or []):
            continue
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("AICLOUD_DEPLOYMENT_NAME") == deployment_name:
            pids.append(proc.pid)
    return pids


class Hammer:
    """Threads posting one row to an endpoint back to back; every non-200 answer is kept."""

    def __init__(self, srv: ServerProcess, name: str, threads: int) -> None:
        self.srv, self.name = srv, name
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.srv.token}"}
        with httpx.Client(base_url=self.srv.url, headers=headers, timeout=30) as h:
            while not self.stop.is_set():
                r = h.post(f"/v1/endpoints/{self.name}/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]})
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")

    def finish(self) -> list[str]:
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.failures


def test_deploy_predict_and_bad_inputs(c: Client, srv: ServerProcess, data: pd.DataFrame) -> None:
    dep = c.deployments.create("srv-basic", model="srv-mlp:1", max_batch_size=16).wait_ready(timeout=120)
    rows = data[["a", "b", "c", "d"]].head(20)
    outputs = dep.predict(rows.to_numpy())
    local = c.models.load("srv-mlp:1")
    assert [int(o) for o in outputs] == [int(p) for p in np.asarray(local(rows))]
    assert dep.predict(rows.to_dict(orient="records")) == outputs
    url = "/v1/endpoints/srv-basic/predict"
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as h:
        assert_error(h.post(url, content=b"{nope", headers={"Content-Type": "application/json"}), 400)
        assert_error(h.post(url, json={"inputs": [[1.0, 2.0]]}), 400)
        assert_error(
            h.post(
                url, content=b'{"inputs": [[NaN, 1, 2, 3]]}', headers={"Content-Type": "application/json"}
            ),
            400,
        )
        assert_error(h.post(url, json={"inputs": []}), 400)
        assert_error(h.post("/v1/endpoints/no-such-deployment/predict", json={"inputs": [[1, 2, 3, 4]]}), 404)
        big = b'{"inputs": [' + b"[1,2,3,4]," * 10_000_000 + b"[1,2,3,4]]}"
        r = h.post(url, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text[:300]
        assert h.post(url, json={"inputs": [[0.1, 0.2, 0.3, 0.4]]}).status_code == 200
        r = httpx.post(f"{srv.url}{url}", json={"inputs": [[0, 0, 0, 0]]})
        assert_error(r, 401, "unauthenticated")


def test_tritonclient_through_the_gateway(c: Client, srv: ServerProcess, data: pd.DataFrame) -> None:
    import tritonclient.http as triton

    c.deployments.create("srv-triton", model="srv-mlp:1").wait_ready(timeout=120)
    host = srv.url.removeprefix("http://")
    client = triton.InferenceServerClient(url=f"{host}/v1/endpoints/srv-triton")

    def auth() -> dict[str, str]:
        return {"Authorization": f"Bearer {srv.token}"}  # fresh dict per call (tritonclient writes into it)

    assert client.is_server_live(headers=auth())
    assert client.is_model_ready("srv-triton", headers=auth())
    meta = client.get_model_metadata("srv-triton", headers=auth())
    assert meta["inputs"][0]["shape"][-1] == 4
    x = data[["a", "b", "c", "d"]].head(8).to_numpy().astype(np.float32)
    expected = c.deployments.get("srv-triton").predict(x)
    for binary in (True, False):
        tensor = triton.InferInput(meta["inputs"][0]["name"], list(x.shape), meta["inputs"][0]["datatype"])
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("srv-triton", [tensor], headers=auth())
        out = result.as_numpy(meta["outputs"][0]["name"])
        assert [int(v) for v in out] == [int(v) for v in expected]


def test_endpoint_token_is_scoped(c: Client, srv: ServerProcess, data: pd.DataFrame) -> None:
    dep = c.deployments.get("srv-basic")
    token = dep.create_token("caller").token
    h = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{srv.url}/v1/endpoints/srv-basic/predict", json={"inputs": [[0, 0, 0, 0]]}, headers=h)
    assert r.status_code == 200
    assert_error(httpx.get(f"{srv.url}/api/v1/datasets", headers=h), 403, "permission_denied")
    r = httpx.post(f"{srv.url}/v1/endpoints/srv-triton/predict", json={"inputs": [[0, 0, 0, 0]]}, headers=h)
    assert r.status_code in (403, 404)


def test_scale_to_zero_and_back(c: Client, srv: ServerProcess, data: pd.DataFrame) -> None:
    dep = c.deployments.create(
        "srv-cold", model="srv-mlp:1", min_replicas=0, max_replicas=1, idle_timeout_s=3
    ).wait_ready(timeout=120)
    dep.predict([[0, 0, 0, 0]])  # warm or cold, it answers
    deadline = time.monotonic() + 60
    while dep.status != "scaled_to_zero" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert dep.info.status.value == "scaled_to_zero"
    while replica_pids("srv-cold") and time.monotonic() < deadline + 30:  # drained replicas exit
        time.sleep(0.3)
    assert not replica_pids("srv-cold")
    started = time.monotonic()
    assert len(dep.predict([[0.5, 0.5, 0.5, 0.5]])) == 1  # held while a replica starts, never a 503
    assert time.monotonic() - started < 60
    assert dep.refresh().info.status.value == "ready"


def test_replica_kill_9_is_invisible_to_callers(c: Client, srv: ServerProcess, data: pd.DataFrame) -> None:
    dep = c.deployments.create("srv-ha", model="srv-mlp:1", min_replicas=2, max_replicas=2)
    deadline = time.monotonic() + 120
    while (
        sum(r.state.value == "ready" for r in dep.refresh().info.replicas) < 2 and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    hammer = Hammer(srv, "srv-ha", threads=4)
    time.sleep(0.5)
    victim = replica_pids("srv-ha")[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(3)
    failures = hammer.finish()
    assert failures == []
    deadline = time.monotonic() + 120
    while (
        sum(r.state.value == "ready" for r in dep.refresh().info.replicas) < 2 and time.monotonic() < deadline
    ):
        time.sleep(0.3)
    assert sum(r.state.value == "ready" for r in dep.info.replicas) == 2
    assert victim not in replica_pids("srv-ha")


def test_rolling_update_has_no_failed_requests(c: Client, srv: ServerProcess, data: pd.DataFrame) -> None:
    dep = c.deployments.create("srv-roll", model="srv-mlp:1").wait_ready(timeout=120)
    hammer = Hammer(srv, "srv-roll", threads=2)
    dep.update(model="srv-mlp:2")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = dep.refresh().info
        if (
            info.generation == 2
            and info.replicas
            and all(r.generation == 2 and r.state.value == "ready" for r in info.replicas)
        ):
            break
        time.sleep(0.3)
    time.sleep(0.5)
    assert hammer.finish() == []
    assert dep.info.model_version_id == c.models.get("srv-mlp:2").id


def test_delete_stops_replicas(c: Client, srv: ServerProcess, data: pd.DataFrame) -> None:
    dep = c.deployments.create("srv-gone", model="srv-mlp:1").wait_ready(timeout=120)
    assert replica_pids("srv-gone")
    dep.delete()
    deadline = time.monotonic() + 60
    while "srv-gone" in {d.name for d in c.deployments.list()} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "srv-gone" not in {d.name for d in c.deployments.list()}
    time.sleep(1)
    assert replica_pids("srv-gone") == []
    r = httpx.post(
        f"{srv.url}/v1/endpoints/srv-gone/predict",
        json={"inputs": [[0, 0, 0, 0]]},
        headers={"Authorization": f"Bearer {srv.token}"},
    )
    assert_error(r, 404)
