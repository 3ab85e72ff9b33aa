"""Canary traffic: the split of replicas by weight, the gateway's draw of a version per request,
its per-version statistics, and the controller starting, promoting and rolling back a canary
without restarting the replicas that stay (in-memory store, fake executor, fake probe)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from test_deployment_controller import Harness

from aicloud.controllers.autoscale import split
from aicloud.entities.serving import DeploymentStatus, ReplicaState
from aicloud.executors.base import LaunchError
from aicloud.gateway.registry import Endpoint, ReplicaSlot
from aicloud.gateway.stats import EndpointStats, VersionStats, quantile
from aicloud.schemas.serving import DeploymentSpec


def test_split_gives_each_weighted_version_its_share_and_at_least_one() -> None:
    assert split(1, {"a": 1}) == {"a": 1}
    assert split(3, {"a": 1}) == {"a": 3}
    assert split(1, {"a": 90, "b": 10}) == {"a": 1, "b": 1}
    assert split(4, {"a": 90, "b": 10}) == {"a": 4, "b": 1}
    assert split(4, {"a": 50, "b": 50}) == {"a": 2, "b": 2}
    assert split(2, {"a": 100, "b": 0}) == {"a": 2, "b": 0}
    assert split(0, {"a": 90, "b": 10}) == {"a": 0, "b": 0}


def _slot(rid: str, version: str, inflight: int = 0) -> ReplicaSlot:
    return ReplicaSlot(rid, f"http://127.0.0.1/{rid}", 1, ready=True, inflight=inflight, version=version)


def test_the_gateway_draws_versions_by_weight() -> None:
    ep = Endpoint("dep_1", "ws", "churn")
    for slot in (_slot("r1", "mv1"), _slot("r2", "mv1"), _slot("r3", "mv2")):
        ep.replicas[slot.replica_id] = slot
    ep.traffic = {"mv1": 90, "mv2": 10}
    random.seed(7)
    picks = [ep.choose().version for _ in range(4000)]  # type: ignore[union-attr]
    share = picks.count("mv2") / len(picks)
    assert 0.07 < share < 0.13, share
    ep.traffic = {"mv1": 0, "mv2": 5}
    assert {ep.choose().version for _ in range(200)} == {"mv2"}  # type: ignore[union-attr]
    ep.traffic = None  # no canary: least outstanding, whatever the version
    ep.replicas["r1"].inflight = ep.replicas["r3"].inflight = 3
    assert ep.choose().replica_id == "r2"  # type: ignore[union-attr]


def test_a_version_without_weight_answers_only_when_no_weighted_one_can() -> None:
    ep = Endpoint("dep_1", "ws", "churn")
    ep.replicas["old"] = _slot("old", "mv1")
    ep.replicas["new"] = _slot("new", "mv2", inflight=50)
    ep.traffic = {"mv2": 1}
    assert {ep.choose().replica_id for _ in range(50)} == {"new"}  # type: ignore[union-attr]
    assert ep.choose(exclude={"new"}).replica_id == "old"  # type: ignore[union-attr]


def test_version_stats_quantiles_errors_and_window() -> None:
    now = [1000.0]
    stats = VersionStats(clock=lambda: now[0])
    for ms in range(1, 101):
        stats.record(ms / 1000, error=ms > 95)
    snap = stats.snapshot()
    assert snap["requests"] == 100 and snap["errors"] == 5
    assert 40 <= snap["p50_ms"] <= 63, snap  # exact to a bucket's width
    assert 80 <= snap["p99_ms"] <= 126, snap
    assert snap["window"]["requests"] == 100 and snap["window"]["error_rate"] == 0.05
    now[0] += 61  # the window has passed; the totals stay
    later = stats.snapshot()
    assert later["requests"] == 100 and later["window"]["requests"] == 0 and later["window"]["p50_ms"] is None
    assert quantile([0, 0, 0], 0.5) is None


def test_endpoint_stats_count_5xx_and_unanswered_calls_as_errors() -> None:
    stats = EndpointStats()
    stats.record("mv1", 0.01, 200)
    stats.record("mv1", 0.01, 422)  # the caller's error, not the version's
    stats.record("mv2", 0.01, 503)
    stats.record("mv2", 0.01, 0)
    snap = stats.snapshot()
    assert snap["mv1"]["errors"] == 0 and snap["mv1"]["requests"] == 2
    assert snap["mv2"]["errors"] == 2


def test_traffic_in_the_spec_is_checked() -> None:
    spec = DeploymentSpec.model_validate({"model": "m:3", "traffic": {3: 90, "v4": 10}})
    assert spec.traffic == {"3": 90, "4": 10}
    for bad, words in (
        ({"x": 1}, "not a version number"),
        ({"3": -1}, "0 to 1000"),
        ({"3": 0}, "above 0"),
        ({"3": 1.5}, "0 to 1000"),
        ([3, 4], "version numbers to weights"),
    ):
        with pytest.raises(ValueError, match=words):
            DeploymentSpec.model_validate({"model": "m:3", "traffic": bad})
    with pytest.raises(ValueError, match="not with a service"):
        DeploymentSpec.model_validate({"service": {"code": "d", "entrypoint": "a.py:B"}, "traffic": {"1": 1}})


def _canary(h: Harness) -> tuple[object, str]:
    """A deployment of m:1 (version id mv1) with a ready replica; returns it and that replica's id."""
    d = h.deployments.create(
        workspace_id="ws_test",
        name="m",
        spec={"model": "m:1", "min_replicas": 1, "max_replicas": 1, "target_inflight": 1},
        model_version_id="mv1",
        desired=1,
    )
    h.all_ready = True
    h.tick(2)
    (stable,) = h.replicas(d)
    assert stable.model_version_id == "mv1" and stable.state == ReplicaState.READY
    return d, stable.id


def test_a_canary_adds_replicas_of_its_version_and_keeps_the_stable_ones(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    d, stable = _canary(h)
    d = h.deployments.update_spec(
        "ws_test", "m", {**d.spec}, "mv1", roll=False, traffic={"mv1": 90, "mv2": 10}
    )  # type: ignore[attr-defined]
    h.tick(2)
    rows = h.replicas(d)
    assert sorted((r.model_version_id, r.state) for r in rows) == [
        ("mv1", ReplicaState.READY),
        ("mv2", ReplicaState.READY),
    ]
    assert stable in {r.id for r in rows}  # not restarted
    ep = h.ep(d)
    assert ep.traffic == {"mv1": 90, "mv2": 10}
    assert {s.version for s in ep.routable()} == {"mv1", "mv2"}
    assert h.get(d).status == DeploymentStatus.READY and h.get(d).generation == 1


def test_promote_keeps_the_canary_replica_and_retires_the_stable_one_once_it_is_ready(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    d, stable = _canary(h)
    h.all_ready = False
    h.ready_urls = {r.url for r in h.replicas(d)}  # the stable one answers; the canary will not yet
    h.deployments.update_spec("ws_test", "m", {}, "mv1", roll=False, traffic={"mv1": 50, "mv2": 50})
    h.tick(2)
    (canary,) = [r for r in h.replicas(d) if r.model_version_id == "mv2"]
    assert canary.state == ReplicaState.STARTING
    # promoted before the canary is ready: the stable replica keeps serving meanwhile
    h.deployments.update_spec("ws_test", "m", {"model": "m:2"}, "mv2", roll=False, traffic=None)
    h.tick(2)
    by_id = {r.id: r for r in h.replicas(d)}
    assert by_id[stable].state == ReplicaState.READY and by_id[canary.id].state == ReplicaState.STARTING
    h.ready_urls.add(canary.url)
    h.tick(2)
    by_id = {r.id: r for r in h.deployments.replicas(d.id)}  # type: ignore[attr-defined]
    assert by_id[canary.id].state == ReplicaState.READY
    assert stable not in by_id or by_id[stable].state == ReplicaState.DRAINING
    assert h.executor.draining_at_cancel.get(stable) is True  # the gateway stopped first
    assert h.ep(d).traffic is None and h.get(d).generation == 1


def test_rollback_retires_the_canary(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    d, stable = _canary(h)
    h.deployments.update_spec("ws_test", "m", {}, "mv1", roll=False, traffic={"mv1": 90, "mv2": 10})
    h.tick(2)
    (canary,) = [r.id for r in h.replicas(d) if r.model_version_id == "mv2"]
    h.deployments.update_spec("ws_test", "m", {}, "mv1", roll=False, traffic=None)
    h.tick(3)
    live = {r.id for r in h.replicas(d) if r.state != ReplicaState.DRAINING}
    assert live == {stable}
    assert h.executor.draining_at_cancel.get(canary) is True


def test_a_replica_that_never_becomes_ready_fails_the_deployment_after_its_startup_timeout(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    d = h.create(startup_timeout_s=0.05)
    h.tick()
    (starting,) = h.replicas(d)
    assert starting.state == ReplicaState.STARTING
    time.sleep(0.1)
    h.tick()
    failed = h.get(d)
    assert failed.status == DeploymentStatus.FAILED
    assert "startup_timeout_s" in (failed.message or "")
    assert [r.id for r in h.failed_rows(d)] == [starting.id]
    h.tick(2)
    assert h.replicas(d) == []  # not retried: it would hang again


def test_a_launch_error_that_would_repeat_fails_the_deployment_at_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    d = h.create()

    def refuse(req: object) -> dict[str, object]:
        raise LaunchError("the job needs 2 GPU(s); this machine has 0", permanent=True)

    h.executor.submit = refuse  # type: ignore[method-assign]
    h.tick()
    failed = h.get(d)
    assert failed.status == DeploymentStatus.FAILED and "this machine has 0" in (failed.message or "")
    assert "not retried" in (failed.message or "") and len(h.removed) == 1


def test_endpoint_history_keeps_an_hour_by_minute() -> None:
    wall = [600.0]  # minute 10
    stats = EndpointStats(wall=lambda: wall[0])
    stats.note_ready(1)
    stats.record("mv1", 0.010, 200)
    stats.record("mv2", 0.020, 503)
    wall[0] += 60
    stats.note_ready(2)
    stats.note_ready(1)  # the minute keeps the most
    first, second = stats.history()
    assert first["t"] == 600 and first["requests"] == 2 and first["errors"] == 1 and first["ready"] == 1
    assert first["p50_ms"] is not None and first["rate_per_s"] == round(2 / 60, 3)
    assert second["requests"] == 0 and second["ready"] == 2 and second["p50_ms"] is None
    for _ in range(70):
        wall[0] += 60
        stats.note_ready(1)
    history = stats.history()
    assert len(history) == 60 and history[-1]["t"] == int(wall[0] // 60) * 60
