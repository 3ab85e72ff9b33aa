"""A deployment of ``name@alias`` follows its alias: moving the alias rolls the replicas to the new
version with no failed request; ``track_alias: false`` stays. Real server, replicas and CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from test_cli import run_cli

from aicloud import Client
from aicloud.client import Deployment
from aicloud.testing.server import ServerProcess

from helpers import small_csv


class Predicting:
    """Two threads predicting one row back to back through the gateway; every non-200 is kept."""

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.server, self.name = server, name
        self.failures: list[str] = []
        self.answered = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(2)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.server.token}"}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=30) as h:
            while not self.stop.is_set():
                r = h.post(f"/v1/endpoints/{self.name}/predict", json={"inputs": [[1, 0.5]]})
                if r.status_code == 200:
                    self.answered += 1
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")

    def finish(self) -> list[str]:
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.failures


def _serves(dep: Deployment, version: int, timeout: float) -> bool:
    """Whether, within ``timeout`` s, the deployment names ``version`` and only ready replicas of its
    current generation are left (the roll is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = dep.refresh().info
        if (
            info.model_version == version
            and info.replicas
            and all(r.generation == info.generation and r.state.value == "ready" for r in info.replicas)
        ):
            return True
        time.sleep(0.2)
    return False


def test_moving_the_alias_rolls_the_deployment_with_no_failed_request(
    server: ServerProcess, client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    ds = client.datasets.create(unique("alias"), small_csv(tmp_path / "s.csv", rows=120))
    train, test = ds.split(train_size=0.75, seed=0, stratify="label")
    model = unique("alias-model")
    for seed in (0, 1):
        job = client.jobs.train(
            task="tabular-classification",
            dataset=train,
            eval_dataset=test,
            target="label",
            params={"epochs": 1, "seed": seed},
            model_name=model,
        )
        assert job.wait(timeout=180).status == "succeeded", job.logs()[-2000:]
    client.models.set_alias(model, "prod", 1)
    following, pinned = unique("alias-dep"), unique("alias-pin")
    dep = client.deployments.create(following, model=f"{model}@prod").wait_ready(timeout=120)
    pin = client.deployments.create(pinned, model=f"{model}@prod", track_alias=False).wait_ready(timeout=120)
    assert dep.info.model_version == 1 and pin.info.model_version == 1
    shown = run_cli(server, "deploy", "show", following).stdout
    assert f"{model}@prod → v1" in shown, shown
    generation = dep.info.generation

    load = Predicting(server, following)
    try:
        time.sleep(0.5)
        client.models.set_alias(model, "prod", 2)
        assert _serves(dep, 2, timeout=60), dep.refresh().info
        time.sleep(0.5)  # requests keep going to the new replicas
    finally:
        failures = load.finish()
    assert failures == [], failures[:5]
    assert load.answered > 0
    assert dep.info.generation == generation + 1

    listed = run_cli(server, "deploy", "list").stdout
    assert f"{model}@prod → v2" in listed, listed
    as_json = json.loads(run_cli(server, "deploy", "show", following, "-o", "json").stdout)
    assert as_json["model_version"] == 2

    # the pinned one stays where it started
    time.sleep(1.5)
    assert pin.refresh().info.model_version == 1 and pin.info.generation == 1
    assert "(track_alias: false)" in run_cli(server, "deploy", "show", pinned).stdout
    for name in (following, pinned):
        client.deployments.get(name).delete()
