"""The deployment controller: a reconcile loop that keeps serving replicas as deployments ask.

Desired state lives in the deployment store (spec, ``generation``, ``desired_replicas``,
status ``deleting``); actual state comes from the executor (``poll``), the replicas'
``/v2/health/ready`` (the injectable ``probe``) and the gateway's live counts in the
:class:`EndpointRegistry`. Each :meth:`DeploymentController.reconcile_once` pass, for every
deployment (an error in one is logged and the pass goes on with the next):

1. **endpoint**: ``registry.ensure`` (the gateway's routing state of the deployment).
2. **observe**: poll every replica's process; adopt the running ones an earlier control plane
   started (see "Control-plane restarts"). A replica that ended while draining is
   removed (row, registry slot, ``cleanup``). One that ended (or was lost) while starting
   or ready *failed*: it leaves the registry, is cleaned up and marked failed (the row of a
   deployment's latest failed replica stays, so ``deploy logs`` shows its log). A failed
   *start* of the current generation with the replica's own error (an exit code: an import
   error, ``setup()`` raised, a model that does not load) fails the deployment at once, with
   the last log lines (the traceback) as its message; a transient one (killed by a signal,
   lost, :data:`~aicloud.controllers.replicas.TRANSIENT_EXIT`) counts, and after
   ``max_failed_starts`` in a row without a replica becoming ready the deployment is
   ``failed`` too. It stays failed until its spec changes: a new generation gets a fresh set
   of tries. A running ``starting`` replica whose probe answers is marked ready,
   in the store and then in the registry (the gateway may route to it).
   Then **alias**: a deployment of ``name@alias`` whose alias has moved (``aliases`` asked each
   full pass; ``track_alias: false`` opts out) gets the new version as a new generation, which
   step 4 rolls out like any update. A deployment with canary traffic does not follow its alias
   until the canary is promoted or rolled back.
3. **autoscale**: a sample ``(now, in-flight incl. held requests)`` from the registry feeds
   :func:`aicloud.controllers.autoscale.decide`; the result is stored by ``set_desired``.
   ``start_requested`` (a request held for a cold deployment) gives one replica at once.
4. **roll**: the versions served (``Deployment.versions()``: the canary's traffic weights, or the
   one version) share ``desired`` by weight (:func:`~aicloud.controllers.autoscale.split`, at
   least one replica each); a replica is *current* when it is of the current generation and
   serves one of them. For each version, start replicas up to its share (a free port from
   binding 127.0.0.1:0, ``add_replica``, a random key of its own, ``executor.submit(launcher(...))``,
   the handle and the sealed key stored); retire its
   surplus (starting ones first); retire the other replicas (older generation, or a version no
   longer served: a promoted or rolled-back canary) only while the current ones have enough
   *ready* replicas to replace them (rolling update). The gateway learns the weights
   (``Endpoint.traffic``) and draws a version per request. Retiring marks
   the replica draining in the registry first, so the gateway sends it nothing new, then
   the store, then ``executor.cancel(handle, drain_grace_s)``: SIGTERM, the replica
   finishes the requests in flight and exits; a later pass removes it.
5. **status**: ``ready`` when a current-generation replica is ready, ``scaled_to_zero``
   when ``desired`` is 0 and none is left, else ``pending``. A ``deleting`` deployment has
   all its replicas retired, then its rows deleted and its endpoint removed.

**Control-plane restarts.** Replicas outlive the control plane (each is its own supervised
process tree), and each replica's row keeps what the gateway needs to reach it: its address (the
port) and its key, sealed with the master key and bound to the replica's id (``keys``, a
:class:`~aicloud.controllers.replicas.ReplicaKeys`). So a new controller *adopts* the replicas
it finds running, as the job controller re-attaches to jobs: a row it did not start whose process
still runs (``executor.poll`` of the persisted handle: the supervisor's pid and start time) gets
its key opened and a registry slot under that key, ready at once when its ``/v2/health/ready``
answers (no cold start; a ready replica that does not answer goes back to ``starting`` and is
routed when it does). A replica whose process died while the control plane was down is failed
and replaced as usual; one with no stored key (started before keys were stored, or a controller
without ``keys``) or whose key does not open is retired and replaced. :meth:`start` runs the
first pass before it returns, so the control plane knows every endpoint and its adopted replicas
before it takes traffic (the server starts the controller before it binds its port).

``on_removed(replica)`` runs once a replica is removed or failed (exited, never launched),
e.g. to revoke the token its launcher minted.

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

The per-replica steps (observe, launch, adopt, fail, retire, remove, stop all) and what they
remember of each replica are the controller's :class:`~aicloud.controllers.replicas.Replicas`
(``replicas``); the controller owns the loop, the per-deployment memory (:class:`Tracked`) and the
decisions: how many replicas, of which generation, and the deployment's status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aicloud.config import Settings
from aicloud.controllers.autoscale import AutoscaleConfig, AutoscaleState, Decision, decide, split, trim
from aicloud.controllers.edge_placement import EdgePlacement, is_edge
from aicloud.controllers.loop import ReconcileLoop
from aicloud.controllers.probes import PROBE_INTERVAL_S, Probe, http_probe
from aicloud.controllers.replicas import LIVE, Launcher, ReplicaKeys, Replicas, Tracked
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.executors.base import Executor
from aicloud.gateway.registry import Endpoint, EndpointRegistry
from aicloud.store.base import MetadataStore

__all__ = ["AliasResolver", "DeploymentController"]

log = logging.getLogger("aicloud.controllers.deployments")

MAX_FAILED_STARTS = 3
DRAIN_GRACE_S = 30.0
DEFAULT_TIMEOUT_S = 60.0  # a spec without timeout_s (as schemas.serving.DeploymentSpec)
#: Longest time between full passes while every deployment is settled (see "Steady state").
STEADY_INTERVAL_S = 1.0

#: ``(workspace_id, "name@alias")`` → the id of the model version the alias names now, or None
#: when it names none (removed). The server's is ``ReplicaLauncher.alias_version``.
AliasResolver = Callable[[str, str], str | None]


class DeploymentController(ReconcileLoop):
    """Reconciles deployments with replica processes; see the module docstring.

    Owns the loop (a :class:`ReconcileLoop`), what it remembers of each deployment
    (:class:`Tracked`) and the steady-state bookkeeping; ``replicas`` (:class:`Replicas`) owns the
    per-replica steps and their memory.
    """

    loop_name = "deployment controller"

    def __init__(
        self,
        store: MetadataStore,
        executor: Executor,
        registry: EndpointRegistry,
        settings: Settings,
        launcher: Launcher,
        *,
        keys: ReplicaKeys | None = None,
        interval: float = 0.2,
        steady_interval: float = STEADY_INTERVAL_S,
        probe: Probe = http_probe,
        probe_interval: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        drain_grace_s: float = DRAIN_GRACE_S,
        max_failed_starts: int = MAX_FAILED_STARTS,
        on_removed: Callable[[Replica], None] | None = None,
        aliases: AliasResolver | None = None,
    ) -> None:
        self.store = store
        self.aliases = aliases  # None: deployments of name@alias stay on the version they started with
        self.registry = registry
        self.settings = settings
        super().__init__(interval)
        self.replicas = Replicas(
            store,
            executor,
            registry,
            launcher,
            keys=keys,
            probe=probe,
            on_ready=self.wake,
            probe_interval=probe_interval,
            drain_grace_s=drain_grace_s,
            max_failed_starts=max_failed_starts,
            on_removed=on_removed,
        )
        #: Deployments placed on edge nodes (controllers/edge_placement.py): rows, not processes.
        self.edge = EdgePlacement(store, registry, keys=keys, offline_after_s=settings.edge_offline_after_s)
        self.clock = clock
        self._tracked: dict[str, Tracked] = {}
        self.steady_interval = steady_interval
        self._dirty = True  # woken since the last full pass
        self._steady: list[tuple[Deployment, Tracked, Endpoint]] = []  # settled at the last full pass
        self._steady_until = float("-inf")
        registry.on_demand = self.wake

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the first pass (which adopts the replicas of an earlier control plane), then start the
        loop and the thread that watches starting replicas (idempotent)."""
        if self.running:
            return
        self.replicas.start_watcher()  # first: the first pass may launch or adopt replicas to watch
        try:
            self.reconcile_once()
        except Exception:
            log.exception("the deployment controller's first pass failed; the loop retries")
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
        """A light pass: every deployment settled at the last full pass still is, by the autoscaler's
        decision taken now and the registry's live state (the store is not read)."""
        with self._pass_lock:
            return all(
                is_edge(d) or self._settled(d, t, ep, self._decide(d, t, ep).desired)
                for d, t, ep in self._steady
            )

    def stop(self, timeout: float = 10.0, *, stop_replicas: bool = True) -> None:
        """Stop the loop, then (by default) the replicas: see the module docstring."""
        self._stop_loop(timeout)
        self.replicas.stop_watcher(timeout)
        if stop_replicas:
            with self._pass_lock:
                self.replicas.stop_all(timeout)

    def reconcile_once(self) -> None:
        """One idempotent pass over every deployment. Thread-safe."""
        with self._pass_lock:
            deployments = self.store.deployments.list_all()
            self.idle = not deployments  # a deployment, even at zero replicas, is watched
            seen = {d.id for d in deployments}
            steady: list[tuple[Deployment, Tracked, Endpoint]] = []
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

    def _reconcile(self, d: Deployment) -> tuple[Deployment, Tracked, Endpoint] | None:
        """One deployment's pass; returns what the light passes watch when it is settled."""
        t = self._tracked.get(d.id)
        if t is None:
            t = self._tracked[d.id] = Tracked()
        ep = self.registry.ensure(d.id, d.workspace_id, d.name)
        ep.timeout_s = float(d.spec.get("timeout_s", DEFAULT_TIMEOUT_S))  # how long the gateway holds
        ep.traffic = dict(d.traffic) if d.traffic else None
        if is_edge(d):  # placed on edge nodes: replica rows for the nodes, no process here
            if d.status != DeploymentStatus.DELETING:
                d = self._follow_alias(d)
            settled = self.edge.reconcile(d, ep)
            if d.status == DeploymentStatus.DELETING:
                self._tracked.pop(d.id, None)
            return (d, t, ep) if settled else None
        live = self.replicas.observe(d, t, ep)
        ep.stats.note_ready(len(ep.routable()))  # the history's replicas over time
        if ep.routable():
            ep.start_requested = False
        if d.status == DeploymentStatus.DELETING:
            for r in live:
                self.replicas.retire(ep, r, "the deployment is being deleted")
            if all(r.state == ReplicaState.FAILED for r in self.store.deployments.replicas(d.id)):
                self.store.deployments.delete(d.id)  # failed rows (kept for their logs) go with it
                self.registry.remove(d.id)
                self._tracked.pop(d.id, None)
                log.info("deployment %s deleted", d.name)
            return None
        d = self._follow_alias(d)
        if d.status == DeploymentStatus.FAILED and t.failed_generation is None:
            t.failed_generation = d.generation  # failed before this controller started
        if (
            d.status == DeploymentStatus.FAILED
            and t.failed_generation == d.generation
            and t.failed_starts == 0
        ):
            t.failed_traffic = d.traffic
        if t.failed_generation is not None and (
            d.generation > t.failed_generation or d.traffic != t.failed_traffic
        ):
            t.failed_generation, t.failed_starts = None, 0  # a new spec or new traffic: try again
        desired = self._autoscale(d, t, ep)
        self._roll(d, t, ep, live, desired)
        self._set_status(d, t, desired)
        return (d, t, ep) if self._settled(d, t, ep, desired) else None

    def _follow_alias(self, d: Deployment) -> Deployment:
        """A deployment of ``name@alias`` (unless ``track_alias: false``) whose alias now names
        another version gets that version as a new generation: the rolling update below."""
        ref = d.spec.get("model")
        if not isinstance(ref, str) or "@" not in ref or d.spec.get("track_alias") is False or d.traffic:
            return d
        if self.aliases is None:
            return d
        version_id = self.aliases(d.workspace_id, ref)
        if version_id is None or version_id == d.model_version_id:
            return d  # unmoved, or removed: keep serving the version it named
        fresh = self.store.deployments.get_any(d.id)  # keep a spec the API wrote since this pass read it
        if fresh.spec.get("model") != ref or fresh.status == DeploymentStatus.DELETING:
            return d  # the next pass sees the new spec
        log.info("deployment %s: %s now names %s; rolling to it", d.name, ref, version_id)
        return self.store.deployments.update_spec(d.workspace_id, d.name, fresh.spec, version_id)

    def _settled(self, d: Deployment, t: Tracked, ep: Endpoint, desired: int) -> bool:
        """Nothing for a pass to do: the count holds, every slot is ready, the status matches."""
        if desired != d.desired_replicas or ep.start_requested or ep.waiting:
            return False
        if d.status == DeploymentStatus.FAILED:
            return t.failed_generation == d.generation and not ep.replicas
        expected = DeploymentStatus.READY if desired else DeploymentStatus.SCALED_TO_ZERO
        slots = list(ep.replicas.values())
        versions = d.versions()
        return (
            d.status == expected
            and d.message is None
            and len(slots) == sum(split(desired, versions).values())
            and all(
                s.ready
                and not s.draining
                and s.generation == d.generation
                and (s.version or None) in versions
                for s in slots
            )
        )

    def _decide(self, d: Deployment, t: Tracked, ep: Endpoint) -> Decision:
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

    def _autoscale(self, d: Deployment, t: Tracked, ep: Endpoint) -> int:
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

    def _roll(self, d: Deployment, t: Tracked, ep: Endpoint, live: list[Replica], desired: int) -> None:
        wanted = split(desired, d.versions())
        current = [r for r in live if self._current(d, r, wanted)]
        old = [r for r in live if not self._current(d, r, wanted)]
        for version, count in wanted.items():
            mine = [r for r in current if _version(d, r) == version]
            if t.failed_generation != d.generation:
                for _ in range(count - len(mine)):
                    started = self.replicas.launch(d, t, ep, version)
                    if started is None:
                        break
                    mine.append(started)
                    current.append(started)
            surplus = len(mine) - count
            if surplus > 0:  # starting ones first (newest first), then the least busy ready ones
                order = sorted(
                    mine,
                    key=lambda r: (
                        r.state == ReplicaState.READY,
                        self._inflight(ep, r),
                        -r.created_at.timestamp(),
                    ),
                )
                for r in order[:surplus]:
                    self.replicas.retire(ep, r, "surplus")
                    current.remove(r)
        ready_now = sum(1 for r in current if r.state == ReplicaState.READY)
        keep_old = max(0, sum(wanted.values()) - ready_now)
        old_ready = [r for r in old if r.state == ReplicaState.READY]
        old_ready.sort(key=lambda r: -r.created_at.timestamp())  # keep the newest old ones longest
        for r in [r for r in old if r.state != ReplicaState.READY] + old_ready[keep_old:]:
            why = (
                f"replaced by generation {d.generation}"
                if r.generation != d.generation
                else "version not served"
            )
            self.replicas.retire(ep, r, why)

    @staticmethod
    def _current(d: Deployment, r: Replica, wanted: dict[str | None, int]) -> bool:
        """Of the current generation and serving a version the deployment serves now."""
        return r.generation == d.generation and wanted.get(_version(d, r), 0) > 0

    @staticmethod
    def _inflight(ep: Endpoint, r: Replica) -> int:
        slot = ep.replicas.get(r.id)
        return slot.inflight if slot else 0

    def _set_status(self, d: Deployment, t: Tracked, desired: int) -> None:
        if t.failed_generation == d.generation:
            return  # set to failed (with its message) when it happened
        versions = d.versions()
        replicas = [
            r
            for r in self.store.deployments.replicas(d.id)
            if r.generation == d.generation and _version(d, r) in versions
        ]
        if any(r.state == ReplicaState.READY for r in replicas):
            status = DeploymentStatus.READY
        elif desired == 0 and all(r.state in (ReplicaState.DRAINING, ReplicaState.FAILED) for r in replicas):
            status = DeploymentStatus.SCALED_TO_ZERO
        else:
            status = DeploymentStatus.PENDING
        if status != d.status or d.message is not None:
            self.store.deployments.set_status(d.id, status, expect=LIVE)


def _version(d: Deployment, r: Replica) -> str | None:
    """The model version ``r`` serves (a row from before canary traffic: its deployment's)."""
    return r.model_version_id if r.model_version_id is not None else d.model_version_id
