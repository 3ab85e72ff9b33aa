"""The deployment controller: a reconcile loop that keeps serving replicas as deployments ask.

Desired state lives in the deployment store (spec, ``generation``, ``desired_replicas``,
status ``deleting``); actual state comes from the executor (``poll``), the replicas'
``/v2/health/ready`` (the injectable ``probe``) and the gateway's live counts in the
:class:`EndpointRegistry`. Each :meth:`DeploymentController.reconcile_once` pass, for every
deployment (an error in one is logged and the pass goes on with the next):

1. **endpoint**: ``registry.ensure`` with the deployment's replica key (random, kept in
   memory only; the gateway presents it to the replicas).
2. **observe**: poll every replica's process. A replica that ended while draining is
   removed (row, registry slot, ``cleanup``). One that ended (or was lost) while starting
   or ready *failed*: it leaves the registry, is marked failed, removed and cleaned up; a
   failed *start* of the current generation counts, and after ``max_failed_starts`` in a
   row without a replica becoming ready the deployment is ``failed`` with the last log
   lines as its message (it stays failed until its spec changes: a new generation gets a
   fresh set of tries). A running ``starting`` replica whose probe answers is marked ready,
   in the store and then in the registry (the gateway may route to it).
3. **autoscale**: a sample ``(now, in-flight incl. held requests)`` from the registry feeds
   :func:`aicloud.controllers.autoscale.decide`; the result is stored by ``set_desired``.
   ``start_requested`` (a request held for a cold deployment) gives one replica at once.
4. **roll**: start replicas of the current generation up to ``desired`` (a free port from
   binding 127.0.0.1:0, ``add_replica``, ``executor.submit(launcher(...))``); retire the
   surplus (starting ones first); retire old-generation replicas only while the current
   generation has enough *ready* replicas to replace them (rolling update). Retiring marks
   the replica draining in the registry first, so the gateway sends it nothing new, then
   the store, then ``executor.cancel(handle, drain_grace_s)``: SIGTERM, the replica
   finishes the requests in flight and exits; a later pass removes it.
5. **status**: ``ready`` when a current-generation replica is ready, ``scaled_to_zero``
   when ``desired`` is 0 and none is left, else ``pending``. A ``deleting`` deployment has
   all its replicas retired, then its rows deleted and its endpoint removed.

**Control-plane restarts.** Replica keys are never stored, so a new controller cannot talk
to replicas another control plane started: every replica row this controller did not start
is retired (SIGTERM, removed once it exited) and fresh replicas replace it. The gateway's
registry starts empty too, so no request reaches a replica of the old control plane.

``on_removed(replica)`` runs once a replica's row is removed (exited, failed, never
launched), e.g. to revoke the token its launcher minted.

**Noticing a new replica fast.** While the loop runs, a :class:`~aicloud.controllers.probes.StartWatcher`
probes every starting replica each ``probe_interval`` seconds and wakes the loop the moment one
answers, so a replica is routable (and a request held for a cold deployment goes out) within a
few milliseconds of binding its port, not at the next pass.

**Steady state.** A full pass reads the store (every deployment and its replicas) and polls
every replica process. When a pass finds every deployment settled (its replicas all ready, of
the current generation, as many as desired, its status matching, nothing held for it) the loop
goes on with light passes for ``steady_interval`` seconds: each takes the autoscaler's
in-flight sample and decision from memory, and a full pass follows at once when a decision
would change the count, a request is held, or a slot is not ready. ``wake()`` (an API change,
a held request, a starting replica that answers, a replica the gateway could not reach) always
brings a full pass. Under load a full pass every 0.2 s cost the control plane about as much CPU
as the gateway's own work, and held the GIL the gateway's event loop needs.

**stop()** stops the loop and then the replicas of every deployment (SIGTERM with the drain
grace), waiting up to ``timeout`` for them to exit, so a control-plane shutdown does not leak
serving processes. Rows of replicas still draining at the deadline stay (``draining``); the
next control plane polls, removes and cleans them up.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aicloud.config import Settings
from aicloud.controllers.autoscale import AutoscaleConfig, AutoscaleState, Decision, decide, trim
from aicloud.controllers.loop import ReconcileLoop
from aicloud.controllers.probes import PROBE_INTERVAL_S, Probe, StartWatcher, free_port, http_probe
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.executors.base import Executor, ExitInfo, LaunchRequest
from aicloud.executors.logs import tail_lines
from aicloud.gateway.registry import Endpoint, EndpointRegistry, ReplicaSlot
from aicloud.store.base import MetadataStore

__all__ = ["DeploymentController", "Launcher", "Probe", "free_port", "http_probe"]

log = logging.getLogger("aicloud.controllers.deployments")

MAX_FAILED_STARTS = 3
MESSAGE_LINES = 20
MAX_POLL_ERRORS = 10
DRAIN_GRACE_S = 30.0
DEFAULT_TIMEOUT_S = 60.0  # a spec without timeout_s (as schemas.serving.DeploymentSpec)
#: Longest time between full passes while every deployment is settled (see "Steady state").
STEADY_INTERVAL_S = 1.0

# The statuses the controller moves between; ``deleting`` is only ever set by a request.
_LIVE = [
    DeploymentStatus.PENDING,
    DeploymentStatus.READY,
    DeploymentStatus.SCALED_TO_ZERO,
    DeploymentStatus.FAILED,
]

Launcher = Callable[[Deployment, str, int, str], LaunchRequest]
"""``launcher(deployment, replica_id, port, replica_key)`` → the replica's LaunchRequest."""


@dataclass
class _Tracked:
    """What the controller remembers of one deployment (memory only)."""

    key: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    last_change: float = float("-inf")
    failed_starts: int = 0  # in a row, with no replica becoming ready
    failed_generation: int | None = None  # the generation that failed to start


class DeploymentController(ReconcileLoop):
    """Reconciles deployments with replica processes; see the module docstring."""

    loop_name = "deployment controller"

    def __init__(
        self,
        store: MetadataStore,
        executor: Executor,
        registry: EndpointRegistry,
        settings: Settings,
        launcher: Launcher,
        *,
        interval: float = 0.2,
        steady_interval: float = STEADY_INTERVAL_S,
        probe: Probe = http_probe,
        probe_interval: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        drain_grace_s: float = DRAIN_GRACE_S,
        max_failed_starts: int = MAX_FAILED_STARTS,
        on_removed: Callable[[Replica], None] | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.registry = registry
        self.settings = settings
        self.launcher = launcher
        super().__init__(interval)
        self.probe = probe
        self.clock = clock
        self.drain_grace_s = drain_grace_s
        self.max_failed_starts = max_failed_starts
        self.on_removed = on_removed
        self._tracked: dict[str, _Tracked] = {}
        self._owned: set[str] = set()  # replica ids this controller started
        self._cancel_sent: set[str] = set()
        self._poll_errors: dict[str, int] = {}
        self._watcher = StartWatcher(probe, self.wake, probe_interval) if probe_interval > 0 else None
        self.steady_interval = steady_interval
        self._dirty = True  # woken since the last full pass
        self._steady: list[tuple[Deployment, _Tracked, Endpoint]] = []  # settled at the last full pass
        self._steady_until = float("-inf")
        registry.on_demand = self.wake

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop and the thread that watches starting replicas (idempotent)."""
        if self._watcher is not None:
            self._watcher.start()  # first: the loop's first pass may launch replicas to watch
        super().start()

    def wake(self) -> None:
        """Run a full pass now."""
        self._dirty = True
        super().wake()

    def tick(self) -> None:
        """The loop's pass: a light one while every deployment stays settled (see "Steady state")."""
        if not self._dirty and self._steady and self.clock() < self._steady_until and self._still_steady():
            return
        self._dirty = False
        self.reconcile_once()

    def _still_steady(self) -> bool:
        with self._pass_lock:
            for d, t, ep in self._steady:
                if ep.start_requested or ep.waiting or not self._slots_settled(d, ep, d.desired_replicas):
                    return False
                if self._decide(d, t, ep).desired != d.desired_replicas:
                    return False
            return True

    def stop(self, timeout: float = 10.0, *, stop_replicas: bool = True) -> None:
        """Stop the loop, then (by default) the replicas: see the module docstring."""
        self._stop_loop(timeout)
        if self._watcher is not None:
            self._watcher.stop(timeout)
        if stop_replicas:
            with self._pass_lock:
                self._stop_all_replicas(timeout)

    def reconcile_once(self) -> None:
        """One idempotent pass over every deployment. Thread-safe."""
        with self._pass_lock:
            deployments = self.store.deployments.list_all()
            self.idle = not deployments  # a deployment, even at zero replicas, is watched
            seen = {d.id for d in deployments}
            steady: list[tuple[Deployment, _Tracked, Endpoint]] = []
            for d in deployments:
                try:
                    settled = self._reconcile(d)
                except Exception:
                    settled = None
                    log.exception("deployment %s (%s): reconcile failed", d.name, d.id)
                if settled is not None:
                    steady.append(settled)
            self._steady = steady if deployments and len(steady) == len(deployments) else []
            self._steady_until = self.clock() + self.steady_interval if self._steady else float("-inf")
            for ep in self.registry.all():  # deleted behind our back
                if ep.deployment_id not in seen:
                    self.registry.remove(ep.deployment_id)
            for deployment_id in list(self._tracked):
                if deployment_id not in seen:
                    del self._tracked[deployment_id]

    # -- one deployment ----------------------------------------------------------------------

    def _reconcile(self, d: Deployment) -> tuple[Deployment, _Tracked, Endpoint] | None:
        """One deployment's pass; returns what the light passes watch when it is settled."""
        t = self._tracked.get(d.id)
        if t is None:
            t = self._tracked[d.id] = _Tracked(key=secrets.token_urlsafe(32))
        ep = self.registry.ensure(d.id, d.workspace_id, d.name, t.key)
        ep.timeout_s = float(d.spec.get("timeout_s", DEFAULT_TIMEOUT_S))  # how long the gateway holds
        live = self._observe(d, t, ep)
        if d.status == DeploymentStatus.DELETING:
            for r in live:
                self._retire(ep, r, "the deployment is being deleted")
            if not self.store.deployments.replicas(d.id):
                self.store.deployments.delete(d.id)
                self.registry.remove(d.id)
                self._tracked.pop(d.id, None)
                log.info("deployment %s deleted", d.name)
            return None
        if d.status == DeploymentStatus.FAILED and t.failed_generation is None:
            t.failed_generation = d.generation  # failed before this controller started
        if t.failed_generation is not None and d.generation > t.failed_generation:
            t.failed_generation, t.failed_starts = None, 0  # a new spec: try again
        desired = self._autoscale(d, t, ep)
        self._roll(d, t, ep, live, desired)
        self._set_status(d, t, desired)
        return (d, t, ep) if self._settled(d, t, ep, desired) else None

    def _settled(self, d: Deployment, t: _Tracked, ep: Endpoint, desired: int) -> bool:
        """Nothing for a pass to do: the count holds, every slot is ready, the status matches."""
        if desired != d.desired_replicas or ep.start_requested or ep.waiting:
            return False
        if d.status == DeploymentStatus.FAILED:
            return t.failed_generation == d.generation and not ep.replicas
        expected = DeploymentStatus.READY if desired else DeploymentStatus.SCALED_TO_ZERO
        return d.status == expected and d.message is None and self._slots_settled(d, ep, desired)

    @staticmethod
    def _slots_settled(d: Deployment, ep: Endpoint, desired: int) -> bool:
        slots = list(ep.replicas.values())
        return len(slots) == desired and all(
            s.ready and not s.draining and s.generation == d.generation for s in slots
        )

    def _observe(self, d: Deployment, t: _Tracked, ep: Endpoint) -> list[Replica]:
        """Poll and probe replicas; remove ended ones. Returns the live, non-draining ones."""
        live: list[Replica] = []
        for r in self.store.deployments.replicas(d.id):
            if r.id not in self._owned and r.state != ReplicaState.DRAINING:
                r = self._retire(ep, r, "started by an earlier control plane")
            if not r.handle:
                self._remove(ep, r)  # never launched (a crash between add and submit)
                continue
            info = self._poll(r)
            if info is None:  # cannot tell now: assume it is as it was
                if r.state != ReplicaState.DRAINING:
                    live.append(r)
                continue
            if info.state != "running":
                if r.state == ReplicaState.DRAINING:
                    self._remove(ep, r)
                else:
                    self._failed(d, t, ep, r, info)
                continue
            if r.state == ReplicaState.DRAINING:
                self._cancel(r)  # idempotent; a no-op when already sent
                continue
            if r.state == ReplicaState.STARTING and self.probe(r.url):
                self._unwatch(r.id)
                r = self.store.deployments.update_replica(r.id, state=ReplicaState.READY)
                self.registry.set_replica(ep, ReplicaSlot(r.id, r.url, r.generation, ready=True))
                if r.generation == d.generation:
                    t.failed_starts = 0
                log.info("deployment %s: replica %s ready at %s", d.name, r.id, r.url)
            live.append(r)
        if ep.routable():
            ep.start_requested = False
        return live

    def _poll(self, r: Replica) -> ExitInfo | None:
        try:
            info = self.executor.poll(r.handle)
        except Exception:
            errors = self._poll_errors.get(r.id, 0) + 1
            self._poll_errors[r.id] = errors
            log.exception("replica %s: poll failed (%d/%d)", r.id, errors, MAX_POLL_ERRORS)
            return ExitInfo("lost") if errors >= MAX_POLL_ERRORS else None
        self._poll_errors.pop(r.id, None)
        return info

    def _decide(self, d: Deployment, t: _Tracked, ep: Endpoint) -> Decision:
        """Take an in-flight sample and ask the policy (memory only)."""
        cfg = AutoscaleConfig.from_spec(d.spec)
        now = self.clock()
        t.samples.append((now, float(ep.inflight)))
        t.samples = trim(t.samples, now, cfg)
        state = AutoscaleState(
            current=d.desired_replicas,
            samples=t.samples,
            last_request=ep.last_request,
            start_requested=ep.start_requested,
            last_change=t.last_change,
        )
        return decide(cfg, state, now)

    def _autoscale(self, d: Deployment, t: _Tracked, ep: Endpoint) -> int:
        decision = self._decide(d, t, ep)
        if decision.desired != d.desired_replicas:
            log.info(
                "deployment %s: %d → %d replicas (%s)",
                d.name,
                d.desired_replicas,
                decision.desired,
                decision.reason,
            )
            self.store.deployments.set_desired(d.id, decision.desired)
            t.last_change = self.clock()
        return decision.desired

    def _roll(self, d: Deployment, t: _Tracked, ep: Endpoint, live: list[Replica], desired: int) -> None:
        current = [r for r in live if r.generation == d.generation]
        old = [r for r in live if r.generation != d.generation]
        if t.failed_generation != d.generation:
            for _ in range(desired - len(current)):
                started = self._start(d, t, ep)
                if started is None:
                    break
                current.append(started)
        surplus = len(current) - desired
        if surplus > 0:  # starting ones first (newest first), then the least busy ready ones
            order = sorted(
                current,
                key=lambda r: (
                    r.state == ReplicaState.READY,
                    self._inflight(ep, r),
                    -r.created_at.timestamp(),
                ),
            )
            for r in order[:surplus]:
                self._retire(ep, r, "surplus")
                current.remove(r)
        ready_now = sum(1 for r in current if r.state == ReplicaState.READY)
        keep_old = max(0, desired - ready_now)
        old_ready = [r for r in old if r.state == ReplicaState.READY]
        old_ready.sort(key=lambda r: -r.created_at.timestamp())  # keep the newest old ones longest
        for r in [r for r in old if r.state != ReplicaState.READY] + old_ready[keep_old:]:
            self._retire(ep, r, f"replaced by generation {d.generation}")

    @staticmethod
    def _inflight(ep: Endpoint, r: Replica) -> int:
        slot = ep.replicas.get(r.id)
        return slot.inflight if slot else 0

    def _set_status(self, d: Deployment, t: _Tracked, desired: int) -> None:
        if t.failed_generation == d.generation:
            return  # set to failed (with its message) when it happened
        replicas = [r for r in self.store.deployments.replicas(d.id) if r.generation == d.generation]
        if any(r.state == ReplicaState.READY for r in replicas):
            status = DeploymentStatus.READY
        elif desired == 0 and not any(r.state != ReplicaState.DRAINING for r in replicas):
            status = DeploymentStatus.SCALED_TO_ZERO
        else:
            status = DeploymentStatus.PENDING
        if status != d.status or d.message is not None:
            self.store.deployments.set_status(d.id, status, expect=_LIVE)

    # -- replica lifecycle -------------------------------------------------------------------

    def _start(self, d: Deployment, t: _Tracked, ep: Endpoint) -> Replica | None:
        """Launch one replica of the current generation; None when the launch failed."""
        port = free_port()
        r = self.store.deployments.add_replica(d.id, generation=d.generation, port=port, handle={})
        self._owned.add(r.id)
        try:
            handle = self.executor.submit(self.launcher(d, r.id, port, t.key))
        except Exception as exc:
            message = f"the replica could not be launched: {type(exc).__name__}: {exc}"[:4000]
            log.warning("deployment %s: %s", d.name, message)
            with contextlib.suppress(Exception):
                self.store.deployments.update_replica(r.id, state=ReplicaState.FAILED, message=message)
            self._remove(ep, r)
            self._failed_start(d, t, message)
            return None
        try:
            r = self.store.deployments.update_replica(r.id, handle=handle)
        except Exception:
            self._kill(handle)  # never leave a process the store does not know about
            raise
        self.registry.set_replica(ep, ReplicaSlot(r.id, r.url, r.generation))
        if self._watcher is not None:
            self._watcher.add(r.id, r.url)
        log.info("deployment %s: replica %s starting on port %d", d.name, r.id, port)
        return r

    def _failed(self, d: Deployment, t: _Tracked, ep: Endpoint, r: Replica, info: ExitInfo) -> None:
        """A starting or ready replica's process ended: record why, remove it, count a failed start."""
        if info.state == "lost":
            why = "the replica's process disappeared"
        else:
            why = f"the replica exited with code {info.exit_code}"
        lines = self._tail(r.handle)
        message = f"{why}\n{lines}" if lines else why
        log.warning("deployment %s: replica %s failed: %s", d.name, r.id, why)
        self.registry.drop_replica(ep, r.id)
        with contextlib.suppress(Exception):
            self.store.deployments.update_replica(r.id, state=ReplicaState.FAILED, message=message)
        self._remove(ep, r)
        if r.state == ReplicaState.STARTING and r.generation == d.generation:
            self._failed_start(d, t, message)

    def _failed_start(self, d: Deployment, t: _Tracked, message: str) -> None:
        t.failed_starts += 1
        if t.failed_starts >= self.max_failed_starts and t.failed_generation != d.generation:
            t.failed_generation = d.generation
            text = f"{t.failed_starts} replicas in a row failed to start; the last: {message}"
            self.store.deployments.set_status(d.id, DeploymentStatus.FAILED, text[:8000], expect=_LIVE)
            log.warning("deployment %s failed: %s", d.name, message.splitlines()[0])

    def _retire(self, ep: Endpoint, r: Replica, why: str) -> Replica:
        """Stop routing to ``r`` (registry first), mark it draining, SIGTERM it."""
        slot = ep.replicas.get(r.id)
        ready = slot.ready if slot is not None else False
        self.registry.set_replica(ep, ReplicaSlot(r.id, r.url, r.generation, ready=ready, draining=True))
        self._unwatch(r.id)
        if r.state != ReplicaState.DRAINING:
            r = self.store.deployments.update_replica(r.id, state=ReplicaState.DRAINING, message=why)
            log.info("replica %s draining: %s", r.id, why)
        self._cancel(r)
        return r

    def _cancel(self, r: Replica) -> None:
        if r.id in self._cancel_sent or not r.handle:
            return
        try:
            self.executor.cancel(r.handle, self.drain_grace_s)
            self._cancel_sent.add(r.id)
        except Exception:
            log.exception("replica %s: cancel failed", r.id)

    def _remove(self, ep: Endpoint, r: Replica) -> None:
        self.registry.drop_replica(ep, r.id)
        if r.handle:
            try:
                self.executor.cleanup(r.handle)
            except Exception:
                log.exception("replica %s: cleanup failed", r.id)
        self.store.deployments.remove_replica(r.id)
        if self.on_removed is not None:
            try:
                self.on_removed(r)
            except Exception:
                log.exception("replica %s: on_removed failed", r.id)
        self._owned.discard(r.id)
        self._cancel_sent.discard(r.id)
        self._poll_errors.pop(r.id, None)
        self._unwatch(r.id)

    def _unwatch(self, replica_id: str) -> None:
        if self._watcher is not None:
            self._watcher.discard(replica_id)

    def _kill(self, handle: dict[str, Any]) -> None:
        try:
            self.executor.cancel(handle, 0.0)
            self.executor.cleanup(handle)
        except Exception:
            log.exception("could not stop the orphan replica %r", handle)

    def _tail(self, handle: dict[str, Any]) -> str:
        try:
            return tail_lines(self.executor.log_path(handle), MESSAGE_LINES)
        except (OSError, ValueError):
            return ""

    # -- shutdown ----------------------------------------------------------------------------

    def _stop_all_replicas(self, timeout: float) -> None:
        """SIGTERM every replica, then remove those that exit within ``timeout``."""
        pending: list[tuple[Endpoint, Replica]] = []
        try:
            deployments = self.store.deployments.list_all()
        except Exception:
            log.exception("cannot list deployments to stop their replicas")
            return
        for d in deployments:
            ep = self.registry.by_deployment(d.id) or self.registry.ensure(
                d.id, d.workspace_id, d.name, self._tracked[d.id].key if d.id in self._tracked else ""
            )
            try:
                for r in self.store.deployments.replicas(d.id):
                    pending.append((ep, self._retire(ep, r, "the control plane is stopping")))
            except Exception:
                log.exception("deployment %s: could not stop its replicas", d.name)
        deadline = time.monotonic() + timeout
        while pending:
            still = []
            for ep, r in pending:
                info = self._poll(r) if r.handle else ExitInfo("lost")
                if info is None or info.state == "running":
                    still.append((ep, r))
                else:
                    with contextlib.suppress(Exception):
                        self._remove(ep, r)
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if pending:
            log.warning(
                "%d replicas still draining at shutdown; the next control plane removes them", len(pending)
            )
