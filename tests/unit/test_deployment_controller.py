"""The deployment controller's reconcile loop: in-memory store, fake executor, fake probe, fake clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from aicloud.blobs.keyring import MemoryKeyring, seal_value, unseal_value
from aicloud.config import Settings
from aicloud.controllers.deployments import DeploymentController
from aicloud.controllers.replicas import ReplicaKeys
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.errors import NotFoundError
from aicloud.executors.base import LaunchRequest
from aicloud.gateway.registry import Endpoint, EndpointRegistry
from aicloud.store.base import MetadataStore
from aicloud.testing.deployments import InMemoryDeploymentStore
from aicloud.testing.executors import FakeExecutor

WS = "ws_test"


class RecordingExecutor(FakeExecutor):
    """Records, for every cancel, whether the gateway had already stopped routing to the replica."""

    def __init__(self, log_dir: Path, registry: EndpointRegistry, **kwargs: Any) -> None:
        super().__init__(log_dir, **kwargs)
        self.registry = registry
        self.draining_at_cancel: dict[str, bool] = {}

    def cancel(self, handle: dict[str, Any], grace_s: float) -> None:
        rid = handle["fake_job"]
        slots = [ep.replicas.get(rid) for ep in self.registry.all()]
        self.draining_at_cancel[rid] = any(s is not None and s.draining for s in slots)
        super().cancel(handle, grace_s)


class SealedKeys:
    """Replica keys sealed as the server seals them (a master key; the replica id as associated data)."""

    def __init__(self) -> None:
        self.keyring = MemoryKeyring()
        self.opened: list[str] = []

    def seal_key(self, replica_id: str, key: str) -> bytes:
        return seal_value(self.keyring, key.encode(), replica_id.encode())

    def open_key(self, replica_id: str, sealed: bytes) -> str:
        self.opened.append(replica_id)
        return unseal_value(self.keyring, sealed, replica_id.encode()).decode()


class Harness:
    def __init__(self, tmp: Path, *, cancel_ends_job: bool = True) -> None:
        self.tmp = tmp
        self.deployments = InMemoryDeploymentStore()
        self.store = cast(MetadataStore, SimpleNamespace(deployments=self.deployments))
        self.registry = EndpointRegistry()
        self.executor = RecordingExecutor(tmp / "logs", self.registry, cancel_ends_job=cancel_ends_job)
        self.now = time.monotonic()  # the registry stamps requests with time.monotonic()
        self.ready_urls: set[str] = set()
        self.all_ready = False
        self.launched: list[tuple[str, int, str]] = []  # (replica id, port, key)
        self.removed: list[str] = []  # on_removed hook calls
        self.settings = Settings(home=tmp / "home")
        self.keys: ReplicaKeys | None = SealedKeys()
        self.controller = self.new_controller()

    def new_controller(self, registry: EndpointRegistry | None = None, **kwargs: Any) -> DeploymentController:
        return DeploymentController(
            self.store,
            self.executor,
            registry or self.registry,
            self.settings,
            self.launch,
            keys=self.keys,
            interval=kwargs.pop("interval", 0.02),
            probe=self.probe,
            clock=lambda: self.now,
            on_removed=lambda r: self.removed.append(r.id),
            **kwargs,
        )

    def restart(self, **kwargs: Any) -> None:
        """A new control plane: a new registry and controller; the replica processes live on."""
        self.registry = EndpointRegistry()
        self.executor.registry = self.registry
        self.controller = self.new_controller(self.registry, **kwargs)

    def launch(self, d: Deployment, replica_id: str, port: int, key: str) -> LaunchRequest:
        self.launched.append((replica_id, port, key))
        env = {
            "AICLOUD_REPLICA_ID": replica_id,
            "AICLOUD_REPLICA_PORT": str(port),
            "AICLOUD_REPLICA_KEY": key,
        }
        return LaunchRequest(job_id=replica_id, argv=["serve"], env=env, cpus=int(d.spec.get("cpus", 1)))

    def probe(self, url: str) -> bool:
        return self.all_ready or url in self.ready_urls

    def create(self, name: str = "digits", **spec: Any) -> Deployment:
        full = {
            "model": "digits@production",
            "min_replicas": 1,
            "max_replicas": 1,
            "target_inflight": 1,
            **spec,
        }
        return self.deployments.create(
            workspace_id=WS, name=name, spec=full, model_version_id=None, desired=int(full["min_replicas"])
        )

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.controller.reconcile_once()

    def get(self, d: Deployment) -> Deployment:
        return self.deployments.get_any(d.id)

    def replicas(self, d: Deployment) -> list[Replica]:
        """The rows of replicas that are not failed (a failed one's row stays, for its log)."""
        return [r for r in self.deployments.replicas(d.id) if r.state != ReplicaState.FAILED]

    def failed_rows(self, d: Deployment) -> list[Replica]:
        return [r for r in self.deployments.replicas(d.id) if r.state == ReplicaState.FAILED]

    def states(self, d: Deployment) -> list[tuple[int, ReplicaState]]:
        return [(r.generation, r.state) for r in self.replicas(d)]

    def ep(self, d: Deployment) -> Endpoint:
        ep = self.registry.by_deployment(d.id)
        assert ep is not None
        return ep

    def routable(self, d: Deployment) -> list[str]:
        ep = self.registry.by_deployment(d.id)
        return sorted(s.replica_id for s in ep.routable()) if ep else []

    def make_ready(self, *replicas: Replica) -> None:
        self.ready_urls.update(r.url for r in replicas)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- scale up, readiness, replacement ---------------------------------------------------------


def test_starts_replicas_up_to_desired(h: Harness) -> None:
    d = h.create(min_replicas=2, max_replicas=2)
    h.tick()
    replicas = h.replicas(d)
    assert [r.state for r in replicas] == [ReplicaState.STARTING] * 2
    assert sorted(h.executor.submitted) == sorted(r.id for r in replicas)
    assert len({r.port for r in replicas}) == 2 and all(r.port > 0 for r in replicas)
    assert all(r.handle == {"executor": "fake", "fake_job": r.id} for r in replicas)
    # a random key per replica, given to it and to its gateway slot, and stored sealed
    keys = {rid: key for rid, _, key in h.launched}
    assert len(set(keys.values())) == 2 and all(len(k) >= 32 for k in keys.values())
    assert {rid: h.ep(d).replicas[rid].key for rid in keys} == keys
    for r in replicas:
        assert r.key_sealed is not None and keys[r.id].encode() not in r.key_sealed
        assert h.keys is not None and h.keys.open_key(r.id, r.key_sealed) == keys[r.id]
    assert [port for _, port, _ in h.launched] == [r.port for r in replicas]
    assert h.routable(d) == []  # starting replicas take no traffic
    assert h.ep(d).timeout_s == 60.0
    assert h.get(d).status == DeploymentStatus.PENDING

    h.tick(3)  # idempotent: nothing more starts while they start
    assert len(h.executor.submitted) == 2


def test_readiness_goes_to_the_registry(h: Harness) -> None:
    d = h.create(min_replicas=2, max_replicas=2)
    h.tick()
    first, second = h.replicas(d)
    h.make_ready(first)
    h.tick()
    assert h.states(d) == [(1, ReplicaState.READY), (1, ReplicaState.STARTING)]
    assert h.replicas(d)[0].ready_at is not None
    assert h.routable(d) == [first.id]
    assert h.ep(d).replicas[first.id].url == first.url
    assert h.get(d).status == DeploymentStatus.READY
    h.make_ready(second)
    h.tick()
    assert h.routable(d) == sorted([first.id, second.id])


def test_a_dead_replica_is_replaced(h: Harness) -> None:
    d = h.create(min_replicas=2, max_replicas=2)
    h.all_ready = True
    h.tick()
    h.tick()
    dead, alive = h.replicas(d)
    h.executor.finish(dead.id, 1, log="Traceback\nMemoryError\n")
    h.tick()
    ids = [r.id for r in h.replicas(d)]
    assert dead.id not in ids and alive.id in ids and len(ids) == 2
    assert dead.id not in h.ep(d).replicas
    assert h.executor.jobs[dead.id].cleanups == 1
    assert h.removed == [dead.id]
    assert len(h.executor.submitted) == 3
    h.tick()
    assert len(h.routable(d)) == 2
    assert h.get(d).status == DeploymentStatus.READY


def test_a_lost_replica_is_replaced(h: Harness) -> None:
    d = h.create()
    h.all_ready = True
    h.tick(2)
    (lost,) = h.replicas(d)
    h.executor.lose(lost.id)
    h.tick()
    (fresh,) = h.replicas(d)
    assert fresh.id != lost.id


# --- autoscaling ------------------------------------------------------------------------------


def test_in_flight_requests_scale_up_at_once(h: Harness) -> None:
    d = h.create(min_replicas=1, max_replicas=4, target_inflight=2)
    h.all_ready = True
    h.tick(2)
    (r,) = h.replicas(d)
    h.ep(d).replicas[r.id].inflight = 5  # the gateway's count
    for _ in range(11):  # the mean over the (2 s) window catches up within it: no upscale delay
        h.now += 0.2
        h.tick()
    assert h.get(d).desired_replicas == 3
    assert len(h.replicas(d)) == 3


def test_surplus_starting_replicas_go_first(h: Harness) -> None:
    d = h.create(min_replicas=1, max_replicas=3, target_inflight=1, downscale_delay_s=5)
    h.tick()
    (first,) = h.replicas(d)
    h.make_ready(first)
    h.ep(d).waiting = 3  # held requests count as in flight
    h.now += 3  # a full averaging window later
    h.tick()
    assert h.get(d).desired_replicas == 3
    h.ep(d).waiting = 0
    h.now += 10
    for _ in range(4):
        h.now += 2
        h.tick()
    assert h.get(d).desired_replicas == 1
    assert [r.id for r in h.replicas(d)] == [first.id]  # the ones still starting were retired
    assert h.routable(d) == [first.id]


def test_scale_to_zero_after_idle(h: Harness) -> None:
    d = h.create(min_replicas=0, max_replicas=1, idle_timeout_s=60)
    h.all_ready = True
    h.tick()  # a new deployment is not idle yet: one replica
    h.ep(d).last_request = h.now
    h.tick()
    assert h.get(d).status == DeploymentStatus.READY
    (r,) = h.replicas(d)
    h.now += 61
    h.tick()
    assert h.get(d).desired_replicas == 0
    assert h.executor.jobs[r.id].cancels == [30.0]
    assert h.executor.draining_at_cancel[r.id] is True  # the gateway stopped routing first
    h.tick()
    assert h.replicas(d) == []
    assert h.get(d).status == DeploymentStatus.SCALED_TO_ZERO
    h.tick(3)
    assert len(h.executor.submitted) == 1  # stays at zero


def test_a_held_request_starts_a_replica_at_once(h: Harness) -> None:
    d = h.create(min_replicas=0, max_replicas=2, idle_timeout_s=60, upscale_delay_s=3600)
    h.ep_ready = None
    h.tick()
    ep = h.ep(d)
    ep.last_request = h.now - 1000  # long idle
    h.tick()
    assert h.get(d).desired_replicas == 0
    h.tick()
    assert h.get(d).status == DeploymentStatus.SCALED_TO_ZERO
    assert h.replicas(d) == []

    h.controller._wake.clear()
    ep.last_request = h.now
    ep.waiting = 1
    h.registry.demand(ep)  # the gateway holds a request
    assert h.controller._wake.is_set()  # on_demand is the controller's wake()
    h.tick()
    assert h.get(d).desired_replicas == 1
    (r,) = h.replicas(d)
    assert ep.start_requested  # until a replica is ready
    h.make_ready(r)
    h.tick()
    assert h.routable(d) == [r.id]
    assert not ep.start_requested
    assert h.get(d).status == DeploymentStatus.READY


# --- steady state: light passes -------------------------------------------------------------


class CountingHarness(Harness):
    """Counts full passes (each reads the deployment list once)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.full_passes = 0
        list_all = self.deployments.list_all

        def counted() -> list[Deployment]:
            self.full_passes += 1
            return list_all()

        self.deployments.list_all = counted  # type: ignore[method-assign]
        self.polls = 0
        poll = self.executor.poll

        def counted_poll(handle: dict[str, Any]) -> Any:
            self.polls += 1
            return poll(handle)

        self.executor.poll = counted_poll  # type: ignore[method-assign]

    def loop_ticks(self, n: int = 1, step: float = 0.2) -> int:
        """``n`` passes as the loop runs them, ``step`` seconds apart; how many of them were full."""
        before = self.full_passes
        for _ in range(n):
            self.now += step
            self.controller.tick()
        return self.full_passes - before


def settled(tmp_path: Path, **spec: Any) -> tuple[CountingHarness, Deployment]:
    h = CountingHarness(tmp_path)
    d = h.create(**spec)
    h.all_ready = True
    h.loop_ticks(3)
    assert h.get(d).status == DeploymentStatus.READY
    return h, d


def test_a_settled_deployment_gets_light_passes_between_full_ones(tmp_path: Path) -> None:
    h, d = settled(tmp_path)
    polls = h.polls
    assert h.loop_ticks(4) == 0  # 0.8 s: no store reads, no polls
    assert h.polls == polls
    assert h.loop_ticks(1, step=0.3) == 1  # 1.1 s since the last full pass: due
    assert h.loop_ticks(2) == 0
    h.controller.wake()  # an API change, a held request, a replica the gateway could not reach
    assert h.loop_ticks(1) == 1
    h.registry.suspect(h.ep(d))  # the gateway's way of waking it
    assert h.loop_ticks(1) == 1


def test_a_light_pass_turns_full_when_the_load_asks_for_more(tmp_path: Path) -> None:
    h, d = settled(tmp_path, max_replicas=3, target_inflight=2)
    (r,) = h.replicas(d)
    assert h.loop_ticks(2) == 0
    h.ep(d).replicas[r.id].inflight = 6  # the gateway's count: 3 replicas' worth
    h.loop_ticks(12)  # the window mean catches up within 2 s; every sample is taken
    assert h.get(d).desired_replicas == 3
    assert len(h.replicas(d)) == 3


def test_a_held_request_or_an_unready_slot_brings_a_full_pass(tmp_path: Path) -> None:
    h, d = settled(tmp_path)
    (r,) = h.replicas(d)
    h.loop_ticks(1)
    h.ep(d).waiting = 1
    assert h.loop_ticks(1) == 1
    h.ep(d).waiting = 0
    h.loop_ticks(1)  # settles again
    assert h.loop_ticks(2) == 0
    h.ep(d).replicas[r.id].draining = True
    assert h.loop_ticks(1) == 1


def test_a_failed_deployment_settles_too_until_its_spec_changes(tmp_path: Path) -> None:
    h = CountingHarness(tmp_path)
    d = h.create()
    h.loop_ticks(1)
    (r,) = h.replicas(d)
    h.executor.finish(r.id, 1, log="boom\n")
    h.loop_ticks(2)
    assert h.get(d).status == DeploymentStatus.FAILED
    assert h.loop_ticks(3) == 0  # nothing to do until a new spec
    d = h.deployments.update_spec(WS, "digits", {**d.spec, "cpus": 2}, None)
    h.controller.wake()  # as the API route does
    h.all_ready = True
    assert h.loop_ticks(2) == 2
    assert h.get(d).status == DeploymentStatus.READY


def test_a_dead_replica_is_noticed_by_the_next_full_pass(tmp_path: Path) -> None:
    h, d = settled(tmp_path)
    (r,) = h.replicas(d)
    h.executor.finish(r.id, 1, log="killed\n")
    for _ in range(6):  # within steady_interval (1 s) of the last full pass
        h.now += 0.2
        h.controller.tick()
    assert r.id not in [x.id for x in h.replicas(d)]
    assert len(h.replicas(d)) == 1


# --- rolling update ---------------------------------------------------------------------------


def test_rolling_update_keeps_serving(tmp_path: Path) -> None:
    h = Harness(tmp_path, cancel_ends_job=False)  # replicas take time to drain
    d = h.create(min_replicas=2, max_replicas=2)
    h.all_ready = True
    h.tick(2)
    old = h.replicas(d)
    assert len(h.routable(d)) == 2
    h.all_ready = False
    d = h.deployments.update_spec(WS, "digits", {**d.spec, "max_batch_size": 8}, None)
    assert d.generation == 2

    h.tick()
    new = [r for r in h.replicas(d) if r.generation == 2]
    assert len(new) == 2
    assert h.routable(d) == sorted(r.id for r in old)  # old ones serve while new ones start
    assert all(not h.executor.jobs[r.id].cancels for r in old)

    h.make_ready(new[0])
    h.tick()
    routable = h.routable(d)
    assert new[0].id in routable and len(routable) == 2  # one new in, one old out
    retired = [r for r in old if r.id not in routable]
    assert len(retired) == 1
    assert h.executor.jobs[retired[0].id].cancels == [30.0]
    assert h.executor.draining_at_cancel[retired[0].id] is True
    assert h.get(d).status == DeploymentStatus.READY

    h.make_ready(new[1])
    h.tick()
    assert h.routable(d) == sorted(r.id for r in new)
    assert all(h.executor.jobs[r.id].cancels == [30.0] for r in old)
    assert {r.state for r in h.replicas(d) if r.generation == 1} == {ReplicaState.DRAINING}

    for r in old:
        h.executor.finish(r.id, 0)  # drained and exited
    h.tick()
    assert [r.generation for r in h.replicas(d)] == [2, 2]
    assert all(h.executor.jobs[r.id].cleanups == 1 for r in old)
    assert sorted(h.removed) == sorted(r.id for r in old)


def test_a_failing_new_generation_leaves_the_old_one_serving(h: Harness) -> None:
    d = h.create(min_replicas=1, max_replicas=1)
    h.all_ready = True
    h.tick(2)
    (old,) = h.replicas(d)
    h.all_ready = False
    h.ready_urls.add(old.url)
    d = h.deployments.update_spec(WS, "digits", {**d.spec, "cpus": 2}, None)
    h.tick()
    (new,) = [r for r in h.replicas(d) if r.generation == 2]
    h.executor.finish(new.id, 1, log="ImportError: no module named torch\n")
    h.tick()
    assert h.get(d).status == DeploymentStatus.FAILED  # at once: it would fail the same way again
    assert h.routable(d) == [old.id]
    assert not h.executor.jobs[old.id].cancels


# --- failures ---------------------------------------------------------------------------------


def test_a_start_that_fails_with_its_own_error_fails_the_deployment_at_once(h: Harness) -> None:
    d = h.create()
    h.tick()
    (r,) = h.replicas(d)
    h.executor.finish(r.id, 1, log="Traceback (most recent call last):\nRuntimeError: no weights\n")
    h.tick()
    failed = h.get(d)
    assert failed.status == DeploymentStatus.FAILED
    assert failed.message is not None
    assert "not retried" in failed.message and "exited with code 1" in failed.message
    assert "RuntimeError: no weights" in failed.message
    assert len(h.executor.submitted) == 1
    assert h.replicas(d) == []
    (kept,) = h.failed_rows(d)  # its row stays, so its log can be read
    assert kept.id == r.id and kept.message is not None and "no weights" in kept.message
    assert h.removed == [r.id] and h.executor.jobs[r.id].cleanups == 1  # released all the same
    text, _ = h.controller.replicas.read_log(kept, 10)
    assert "RuntimeError: no weights" in text


def test_failed_starts_fail_the_deployment(h: Harness) -> None:
    d = h.create()
    for i in range(3):
        h.tick()
        (r,) = h.replicas(d)
        h.executor.finish(r.id, -9, log="".join(f"line {i}.{n}\n" for n in range(30)))
    h.tick()
    failed = h.get(d)
    assert failed.status == DeploymentStatus.FAILED
    assert failed.message is not None
    assert "3 replicas in a row failed to start" in failed.message
    assert "killed by signal 9" in failed.message
    assert "line 2.29" in failed.message and "line 2.10" in failed.message
    assert "line 2.9\n" not in failed.message  # the last 20 lines only
    assert h.replicas(d) == []
    assert [r.id for r in h.failed_rows(d)] == [r.id]  # the latest failed replica only
    h.tick(3)
    assert len(h.executor.submitted) == 3  # no more tries
    assert h.get(d).status == DeploymentStatus.FAILED

    # A new spec (generation) gets a fresh set of tries.
    d = h.deployments.update_spec(WS, "digits", {**d.spec, "cpus": 2}, None)
    h.all_ready = True
    h.tick(2)
    assert h.get(d).status == DeploymentStatus.READY
    assert h.get(d).message is None


def test_a_ready_replica_resets_the_failure_count(h: Harness) -> None:
    d = h.create()
    for _ in range(2):
        h.tick()
        (r,) = h.replicas(d)
        h.executor.finish(r.id, 75)  # TRANSIENT_EXIT: retried
    h.tick()
    (r,) = h.replicas(d)
    h.make_ready(r)
    h.tick()
    for code in (1, -9):
        (r,) = h.replicas(d)
        h.executor.finish(r.id, code)  # a crash of a ready replica, then of a starting one
        h.tick()
    assert h.get(d).status != DeploymentStatus.FAILED


def test_launch_errors_count_as_failed_starts(h: Harness) -> None:
    d = h.create()
    h.executor.fail_submit = True
    h.tick(3)
    failed = h.get(d)
    assert failed.status == DeploymentStatus.FAILED
    assert failed.message is not None and "fake submit failure" in failed.message
    assert h.replicas(d) == []
    assert len(h.removed) == 3  # the rows made for the launches are gone (and reported)


def test_one_bad_deployment_does_not_stop_the_others(h: Harness) -> None:
    bad = h.create("bad", target_inflight=0)  # invalid: the policy raises
    good = h.create("good")
    h.tick()
    assert h.replicas(bad) == []
    assert len(h.replicas(good)) == 1


def test_a_replica_whose_poll_keeps_failing_is_lost(h: Harness) -> None:
    d = h.create()
    h.all_ready = True
    h.tick(2)
    (r,) = h.replicas(d)
    h.executor.fail_poll = True
    h.tick(9)
    assert [x.id for x in h.replicas(d)] == [r.id]  # unknown is not dead: nothing more starts
    h.tick()
    h.executor.fail_poll = False
    h.tick()
    (fresh,) = h.replicas(d)
    assert fresh.id != r.id


def test_a_kept_failed_row_does_not_hold_a_scale_to_zero_or_a_delete(h: Harness) -> None:
    d = h.create(min_replicas=0, max_replicas=1, idle_timeout_s=60)
    h.all_ready = True
    h.tick(2)
    (crashed,) = h.replicas(d)
    h.executor.finish(crashed.id, 1, log="Segmentation fault\n")  # a ready replica crashed
    h.tick(2)
    assert [r.id for r in h.failed_rows(d)] == [crashed.id]
    assert h.get(d).status == DeploymentStatus.READY  # a crash while serving is not a failed start
    h.now += 61
    h.tick(3)
    assert h.replicas(d) == [] and h.get(d).status == DeploymentStatus.SCALED_TO_ZERO
    h.deployments.set_status(d.id, DeploymentStatus.DELETING)
    h.tick()
    with pytest.raises(NotFoundError):
        h.get(d)  # deleted, the failed row with it


# --- delete, restart, stop --------------------------------------------------------------------


def test_delete_drains_then_removes(tmp_path: Path) -> None:
    h = Harness(tmp_path, cancel_ends_job=False)
    d = h.create(min_replicas=2, max_replicas=2)
    keep = h.create("keep")
    h.all_ready = True
    h.tick(2)
    replicas = h.replicas(d)
    h.deployments.set_status(d.id, DeploymentStatus.DELETING)
    h.tick()
    assert h.get(d).status == DeploymentStatus.DELETING  # never overwritten by the controller
    assert h.routable(d) == []
    assert all(h.executor.draining_at_cancel[r.id] for r in replicas)
    assert {r.state for r in h.replicas(d)} == {ReplicaState.DRAINING}
    h.executor.finish(replicas[0].id, 0)
    h.tick()
    assert len(h.replicas(d)) == 1
    h.executor.finish(replicas[1].id, 0)
    h.tick()
    assert h.deployments.list_all() == [h.get(keep)]
    assert h.registry.by_deployment(d.id) is None
    assert h.registry.by_deployment(keep.id) is not None


def test_a_new_control_plane_adopts_the_running_replicas(h: Harness) -> None:
    d = h.create(min_replicas=2, max_replicas=2)
    h.all_ready = True
    h.tick(2)
    before = h.replicas(d)
    keys = {rid: key for rid, _, key in h.launched}

    h.restart()
    h.tick()  # one pass: routable at once, under the keys they were started with
    assert h.routable(d) == sorted(keys)
    assert {rid: slot.key for rid, slot in h.ep(d).replicas.items()} == keys
    assert all(h.executor.jobs[r.id].cancels == [] for r in before)  # nothing drained
    assert len(h.executor.submitted) == 2  # nothing started
    assert h.replicas(d) == before
    assert h.get(d).status == DeploymentStatus.READY
    h.tick(3)
    assert len(h.executor.submitted) == 2 and h.replicas(d) == before
    assert h.removed == []


def test_start_adopts_before_it_returns(h: Harness) -> None:
    d = h.create()
    h.all_ready = True
    h.tick(2)
    (r,) = h.replicas(d)
    h.restart(interval=3600, probe_interval=0)  # no pass but the first one
    h.controller.start()
    try:
        assert h.routable(d) == [r.id]  # before the server takes traffic, no request is refused
    finally:
        h.controller.stop(timeout=5, stop_replicas=False)
    assert h.executor.running_ids() == [r.id]


def test_a_replica_that_died_while_the_control_plane_was_down_is_replaced(h: Harness) -> None:
    d = h.create(min_replicas=2, max_replicas=2)
    h.all_ready = True
    h.tick(2)
    dead, alive = h.replicas(d)
    h.restart()
    h.executor.finish(dead.id, -9, log="Killed\n")
    h.tick()
    ids = [r.id for r in h.replicas(d)]
    assert dead.id not in ids and alive.id in ids and len(ids) == 2
    assert h.removed == [dead.id] and h.executor.jobs[dead.id].cleanups == 1
    assert h.keys is not None and dead.id not in cast(SealedKeys, h.keys).opened  # dead: not adopted
    assert h.executor.jobs[alive.id].cancels == []
    assert len(h.executor.submitted) == 3
    h.tick()
    assert len(h.routable(d)) == 2


def test_a_lost_replica_found_after_a_restart_is_replaced(h: Harness) -> None:
    d = h.create()
    h.all_ready = True
    h.tick(2)
    (lost,) = h.replicas(d)
    h.restart()
    h.executor.lose(lost.id)
    h.tick(2)
    (fresh,) = h.replicas(d)
    assert fresh.id != lost.id and h.routable(d) == [fresh.id]


def test_replicas_without_a_stored_key_are_replaced(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys = None  # a control plane that stores no keys (or replicas started before keys were stored)
    h.controller = h.new_controller()
    d = h.create(min_replicas=2, max_replicas=2)
    h.all_ready = True
    h.tick(2)
    before = h.replicas(d)
    assert all(r.key_sealed is None for r in before)

    h.keys = SealedKeys()
    h.restart()
    h.tick()
    assert all(h.executor.jobs[r.id].cancels == [30.0] for r in before)
    assert all(h.executor.draining_at_cancel[r.id] for r in before)
    h.tick()
    after = h.replicas(d)
    assert len(after) == 2 and not {r.id for r in before} & {r.id for r in after}
    assert len(h.routable(d)) == 2


def test_a_replica_whose_key_does_not_open_is_replaced(h: Harness) -> None:
    d = h.create(min_replicas=2, max_replicas=2)
    h.all_ready = True
    h.tick(2)
    first, second = h.replicas(d)
    assert second.key_sealed is not None
    h.deployments.update_replica(first.id, key_sealed=second.key_sealed)  # another replica's key
    h.restart()
    h.tick(2)
    assert h.executor.jobs[first.id].cancels == [30.0]
    assert h.executor.jobs[second.id].cancels == []
    ids = [r.id for r in h.replicas(d)]
    assert first.id not in ids and second.id in ids and len(ids) == 2
    assert len(h.routable(d)) == 2


def test_an_adopted_replica_that_does_not_answer_is_routed_once_it_does(h: Harness) -> None:
    d = h.create()
    h.all_ready = True
    h.tick(2)
    (r,) = h.replicas(d)
    h.all_ready = False  # alive, but its readiness probe fails now
    h.restart()
    h.tick()
    assert h.states(d) == [(1, ReplicaState.STARTING)]
    assert h.routable(d) == [] and r.id in h.ep(d).replicas
    assert len(h.executor.submitted) == 1  # it is given the chance: nothing new starts
    h.make_ready(r)
    h.tick()
    assert h.states(d) == [(1, ReplicaState.READY)] and h.routable(d) == [r.id]
    assert h.ep(d).replicas[r.id].key == h.launched[0][2]


def test_an_adopted_starting_replica_goes_on_starting(h: Harness) -> None:
    d = h.create()
    h.tick()
    (r,) = h.replicas(d)
    h.restart()
    h.tick()
    assert h.states(d) == [(1, ReplicaState.STARTING)] and h.routable(d) == []
    h.make_ready(r)
    h.tick()
    assert h.routable(d) == [r.id] and len(h.executor.submitted) == 1


def test_an_adopted_old_generation_is_rolled_over(h: Harness) -> None:
    d = h.create()
    h.all_ready = True
    h.tick(2)
    (old,) = h.replicas(d)
    h.restart()
    h.deployments.update_spec(WS, d.name, {**d.spec, "max_batch_size": 8}, None)
    h.tick()  # the old replica serves (adopted) until its successor is ready
    assert old.id in h.routable(d) and len(h.executor.submitted) == 2
    h.tick()
    assert h.executor.jobs[old.id].cancels == [30.0]
    h.tick()  # it exited: removed
    assert [r.generation for r in h.replicas(d)] == [2]


def test_the_loop_runs_in_a_thread_and_stop_stops_replicas(h: Harness) -> None:
    d = h.create(min_replicas=2, max_replicas=2)
    h.all_ready = True
    h.controller.start()
    try:
        assert h.controller.running
        wait_for(lambda: len(h.routable(d)) == 2)
        h.create("later")
        h.controller.wake()
        wait_for(lambda: len(h.executor.submitted) == 3)
    finally:
        h.controller.stop(timeout=5)
    assert not h.controller.running
    assert h.executor.running_ids() == []
    assert all(job.cancels == [30.0] for job in h.executor.jobs.values())
    assert all(h.deployments.replicas(x.id) == [] for x in h.deployments.list_all())


def test_stop_leaves_rows_of_replicas_still_draining(tmp_path: Path) -> None:
    h = Harness(tmp_path, cancel_ends_job=False)
    d = h.create()
    h.all_ready = True
    h.tick(2)
    h.controller.stop(timeout=0.1)
    (r,) = h.replicas(d)
    assert r.state == ReplicaState.DRAINING
    # the next control plane removes it once it has exited
    h.executor.finish(r.id, 0)
    h.controller = h.new_controller(EndpointRegistry())
    h.tick()
    assert r.id not in [x.id for x in h.replicas(d)]


def test_a_replica_that_binds_between_passes_is_routable_before_the_next_pass(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.controller = DeploymentController(  # one pass at start, then only when woken
        h.store,
        h.executor,
        h.registry,
        h.settings,
        h.launch,
        interval=3600,
        probe=h.probe,
        probe_interval=0.01,
    )
    d = h.create()
    h.controller.start()
    try:
        wait_for(lambda: len(h.replicas(d)) == 1)
        assert h.routable(d) == []
        h.all_ready = True  # the replica bound its port: the watcher's probe answers and wakes the loop
        wait_for(lambda: len(h.routable(d)) == 1)
        assert h.get(d).status == DeploymentStatus.READY
    finally:
        h.controller.stop(timeout=5)
