"""The replicas of the deployments, one at a time: :class:`Replicas` launches, adopts, observes,
fails, retires and removes them, stops them all at shutdown and reads their logs.

The :class:`~aicloud.controllers.deployments.DeploymentController` holds one (``replicas``) and
decides how many replicas of which generation each deployment needs (autoscale, roll, status);
:class:`Replicas` carries that out for one replica at a time, keeping the store, the gateway's
:class:`~aicloud.gateway.registry.EndpointRegistry` and the executor in step. The order of each
step matters and is the contract:

* a launch adds the replica's row first, then submits it (with a fresh random key of its own),
  then records its handle and its key, sealed (:class:`ReplicaKeys`); a replica the store could
  not record is killed at once (never a process the store does not know);
* adopting a replica an earlier control plane started (it is still running) opens its sealed key
  and registers it with the gateway under that key: ready at once when its ``/v2/health/ready``
  answers, else back to starting (the watcher routes it when it answers); one without a stored
  key, or whose key does not open, is retired instead;
* retiring marks the registry slot draining first (the gateway sends it nothing new), then the
  row, then SIGTERMs the process with the drain grace;
* removing drops the slot, cleans the executor's files up, deletes the row and calls
  ``on_removed`` (e.g. to revoke the replica's token);
* a replica whose process ended while starting or ready *failed*: it is released as a removal
  releases (slot, files, ``on_removed``) but its row stays, state ``failed`` with why as its
  message, so ``deploy logs`` still shows its log (the executor keeps log files); a deployment keeps
  the row of its latest failed replica only (an older one is deleted when a newer one fails, all
  with the deployment). A failed *start* that will fail again the same way (the process exited
  with its own error code: an import error, a bad entrypoint, ``setup()`` raised, a model that
  does not load) fails the deployment at once; one that looks transient (killed by a signal,
  lost, or exit code :data:`TRANSIENT_EXIT`, which the replica uses when it could not reach the
  control plane) is retried up to ``max_failed_starts`` times in a row;
* a replica still starting (running, not answering) after the spec's ``startup_timeout_s`` (else
  :data:`STARTUP_TIMEOUT_S`) since it was added is killed and fails the same way: a ``setup()`` that
  hangs fails the deployment instead of keeping it pending for ever.

Each replica serves one model version (``Replica.model_version_id``, its slot's ``version``): the
deployment's, or with canary traffic one of the versions the traffic names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aicloud.controllers.loop import poll_counted
from aicloud.controllers.probes import PROBE_INTERVAL_S, Probe, StartWatcher
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.errors import AicloudError
from aicloud.executors.base import Executor, ExitInfo, LaunchError, LaunchRequest
from aicloud.executors.logs import read_lines, tail_lines
from aicloud.gateway.registry import Endpoint, EndpointRegistry, ReplicaSlot
from aicloud.store.base import MetadataStore
from aicloud.wire.tcp import free_port

__all__ = ["LIVE", "TRANSIENT_EXIT", "Launcher", "ReplicaKeys", "Replicas", "Tracked", "is_transient"]

log = logging.getLogger("aicloud.controllers.deployments")

#: The most of a replica's log that :meth:`Replicas.read_log` reads.
MAX_LOG_TAIL = 1024 * 1024
MESSAGE_LINES = 20
#: How long a replica may take from launch to answering its readiness probe (a spec without
#: ``startup_timeout_s``).
STARTUP_TIMEOUT_S = 600.0
#: The exit code (``EX_TEMPFAIL``) of a replica that failed to start for a reason that may pass
#: (the control plane did not answer its download): retried, as a death by signal is.
TRANSIENT_EXIT = 75

# The statuses the controller moves between; ``deleting`` is only ever set by a request.
LIVE = [
    DeploymentStatus.PENDING,
    DeploymentStatus.READY,
    DeploymentStatus.SCALED_TO_ZERO,
    DeploymentStatus.FAILED,
]

Launcher = Callable[[Deployment, str, int, str], LaunchRequest]
"""``launcher(deployment, replica_id, port, replica_key)`` → the replica's LaunchRequest."""


def is_transient(info: ExitInfo) -> bool:
    """Whether a replica that ended this way might start if tried again: killed by a signal (the
    OOM killer, a cancel), lost, or :data:`TRANSIENT_EXIT`. Any other exit code is the replica's own
    error (a traceback in its log) and would happen again."""
    code = info.exit_code
    return info.state != "exited" or code is None or code < 0 or code == TRANSIENT_EXIT


class ReplicaKeys(Protocol):
    """Seals replica keys for the store and opens them again (the control plane's master key:
    :class:`aicloud.server.services.replicas.ReplicaLauncher`). A sealed key is bound to its replica's id."""

    def seal_key(self, replica_id: str, key: str) -> bytes: ...

    def open_key(self, replica_id: str, sealed: bytes) -> str:
        """Raises when ``sealed`` does not open (altered, another replica's, an unknown master key)."""
        ...


@dataclass
class Tracked:
    """What the controller remembers of one deployment (memory only): the autoscaler's samples and
    last change, and the failed starts that :class:`Replicas` counts."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    last_change: float = float("-inf")
    failed_starts: int = 0  # in a row, with no replica becoming ready
    failed_generation: int | None = None  # the generation that failed to start
    failed_traffic: dict[str, int] | None = None  # and the canary traffic it had then


class Replicas:
    """The per-replica steps (see the module docstring) and what they remember, in memory only:
    the replicas this control plane started or adopted, those already sent their SIGTERM, the
    failed polls in a row of each, and the :class:`~aicloud.controllers.probes.StartWatcher` that
    probes the starting ones between passes (None when ``probe_interval`` is 0).

    ``probe(url)`` tells whether a replica answers; ``on_ready()`` runs (on the watcher's thread)
    when a starting one does; ``on_removed(replica)`` runs once a replica is removed or failed. Not
    thread-safe: the controller calls it from one pass at a time.
    """

    def __init__(
        self,
        store: MetadataStore,
        executor: Executor,
        registry: EndpointRegistry,
        launcher: Launcher,
        *,
        keys: ReplicaKeys | None,  # None: keys are not stored, so no replica can be adopted
        probe: Probe,
        on_ready: Callable[[], None],
        probe_interval: float = PROBE_INTERVAL_S,
        drain_grace_s: float,
        max_failed_starts: int,
        on_removed: Callable[[Replica], None] | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.registry = registry
        self.launcher = launcher
        self.keys = keys
        self.probe = probe
        self.drain_grace_s = drain_grace_s
        self.max_failed_starts = max_failed_starts
        self.on_removed = on_removed
        self._owned: set[str] = set()  # replica ids this controller started or adopted
        self._cancel_sent: set[str] = set()
        self._poll_errors: dict[str, int] = {}
        self._watcher = StartWatcher(probe, on_ready, probe_interval) if probe_interval > 0 else None

    # -- the watcher -------------------------------------------------------------------------

    def start_watcher(self) -> None:
        """Start probing the starting replicas between passes (idempotent)."""
        if self._watcher is not None:
            self._watcher.start()

    def stop_watcher(self, timeout: float) -> None:
        if self._watcher is not None:
            self._watcher.stop(timeout)

    def _watch(self, r: Replica) -> None:
        if self._watcher is not None:
            self._watcher.add(r.id, r.url)

    def _unwatch(self, replica_id: str) -> None:
        if self._watcher is not None:
            self._watcher.discard(replica_id)

    # -- one pass over a deployment's replicas ------------------------------------------------

    def observe(self, d: Deployment, t: Tracked, ep: Endpoint) -> list[Replica]:
        """Poll and probe ``d``'s replicas: remove the ended ones (failing those that were not
        draining), adopt the running ones an earlier control plane started, mark the starting ones
        that answer ready. Returns the live, non-draining ones."""
        live: list[Replica] = []
        for r in self.store.deployments.replicas(d.id):
            if r.state == ReplicaState.FAILED:
                continue  # ended and released; its row stays for its log (see the module docstring)
            if not r.handle:
                self._remove(ep, r)  # never launched (a crash between add and submit)
                continue
            info = self._poll(r)
            if info is None:  # cannot tell now: assume it is as it was (adopted once it can tell)
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
            if r.id not in self._owned:  # an earlier control plane started it, and it still runs
                r = self._adopt(d, ep, r)
                if r.state == ReplicaState.DRAINING:
                    continue
                if r.state == ReplicaState.READY:
                    live.append(r)
                    continue
            if r.state == ReplicaState.STARTING:
                if self.probe(r.url):
                    self._unwatch(r.id)
                    r = self.store.deployments.update_replica(r.id, state=ReplicaState.READY)
                    self.registry.set_replica(ep, _slot(r, ready=True))
                    if r.generation == d.generation:
                        t.failed_starts = 0
                    log.info("deployment %s: replica %s ready at %s", d.name, r.id, r.url)
                elif self._starting_too_long(d, t, ep, r):
                    continue
            live.append(r)
        return live

    def _starting_too_long(self, d: Deployment, t: Tracked, ep: Endpoint, r: Replica) -> bool:
        """Kill and fail ``r`` when it has been starting longer than the startup timeout."""
        limit = float(d.spec.get("startup_timeout_s") or STARTUP_TIMEOUT_S)
        if (datetime.now(UTC) - r.created_at).total_seconds() <= limit:
            return False
        self._kill_process(r.handle)
        why = (
            f"the replica did not become ready within {limit:g}s of its launch (startup_timeout_s); "
            "if its setup needs longer, raise startup_timeout_s"
        )
        self._fail(d, t, ep, r, why, transient=False)
        return True

    def _poll(self, r: Replica) -> ExitInfo | None:
        return poll_counted(self.executor, r.handle, self._poll_errors, r.id, log)

    # -- replica lifecycle -------------------------------------------------------------------

    def launch(self, d: Deployment, t: Tracked, ep: Endpoint, version: str | None) -> Replica | None:
        """Launch one replica of the current generation serving model version ``version`` (None: a
        Service); None when the launch failed."""
        port = free_port()
        r = self.store.deployments.add_replica(
            d.id, generation=d.generation, port=port, handle={}, model_version_id=version
        )
        self._owned.add(r.id)
        key = secrets.token_urlsafe(32)
        try:
            sealed = self.keys.seal_key(r.id, key) if self.keys is not None else None
            serves = dataclasses.replace(d, model_version_id=version)
            handle = self.executor.submit(self.launcher(serves, r.id, port, key))
        except Exception as exc:
            message = f"the replica could not be launched: {type(exc).__name__}: {exc}"[:4000]
            log.warning("deployment %s: %s", d.name, message)
            with contextlib.suppress(Exception):
                self.store.deployments.update_replica(r.id, state=ReplicaState.FAILED, message=message)
            self._remove(ep, r)
            self._failed_start(d, t, message, transient=not _permanent(exc))
            return None
        try:
            r = self.store.deployments.update_replica(r.id, handle=handle, key_sealed=sealed)
        except Exception:
            self._kill(handle)  # never leave a process the store does not know about
            raise
        self.registry.set_replica(ep, _slot(r, key=key))
        self._watch(r)
        log.info("deployment %s: replica %s starting on port %d", d.name, r.id, port)
        return r

    def _adopt(self, d: Deployment, ep: Endpoint, r: Replica) -> Replica:
        """Take over a running replica that an earlier control plane started (see the module
        docstring); returns its row as it is now (draining when it could not be adopted)."""
        key = self._open_key(r)
        if key is None:
            return self.retire(ep, r, "started by an earlier control plane that stored no key for it")
        self._owned.add(r.id)
        if r.state == ReplicaState.READY and self.probe(r.url):
            self.registry.set_replica(ep, _slot(r, ready=True, key=key))
            log.info("deployment %s: replica %s adopted, ready at %s", d.name, r.id, r.url)
            return r
        if r.state == ReplicaState.READY:  # running but not answering now: it proves itself again
            r = self.store.deployments.update_replica(r.id, state=ReplicaState.STARTING)
        self.registry.set_replica(ep, _slot(r, key=key))
        self._watch(r)
        log.info("deployment %s: replica %s adopted, starting at %s", d.name, r.id, r.url)
        return r

    def _open_key(self, r: Replica) -> str | None:
        """The replica's key from its sealed copy in the store; None when there is none or it does
        not open (the reason is logged, never the key)."""
        if self.keys is None or r.key_sealed is None:
            return None
        try:
            return self.keys.open_key(r.id, r.key_sealed)
        except Exception as exc:
            log.warning("replica %s: its stored key does not open (%s)", r.id, type(exc).__name__)
            return None

    def _failed(self, d: Deployment, t: Tracked, ep: Endpoint, r: Replica, info: ExitInfo) -> None:
        """A starting or ready replica's process ended: record why, release it but keep its row (for
        its log), count a failed start (see the module docstring)."""
        if info.state == "lost":
            why = "the replica's process disappeared"
        elif info.exit_code is not None and info.exit_code < 0:
            why = f"the replica was killed by signal {-info.exit_code}"
        else:
            why = f"the replica exited with code {info.exit_code}"
        self._fail(d, t, ep, r, why, transient=is_transient(info))

    def _fail(
        self, d: Deployment, t: Tracked, ep: Endpoint, r: Replica, why: str, *, transient: bool
    ) -> None:
        """Record why ``r`` failed (with its log's last lines), release it but keep its row, count
        a failed start when it was a start of the current generation."""
        lines = self._tail(r.handle)
        message = f"{why}\n{lines}" if lines else why
        log.warning("deployment %s: replica %s failed: %s", d.name, r.id, why)
        self.registry.drop_replica(ep, r.id)
        try:
            self.store.deployments.update_replica(r.id, state=ReplicaState.FAILED, message=message[:8000])
        except Exception:
            log.exception("replica %s: could not record its failure", r.id)
            self._remove(ep, r)
        else:
            self._release(ep, r)
            self._forget_older_failures(d, r.id)
        if r.state == ReplicaState.STARTING and r.generation == d.generation:
            self._failed_start(d, t, message, transient=transient)

    def _forget_older_failures(self, d: Deployment, keep: str) -> None:
        """Delete the rows of ``d``'s failed replicas but ``keep`` (released already)."""
        for old in self.store.deployments.replicas(d.id):
            if old.state == ReplicaState.FAILED and old.id != keep:
                with contextlib.suppress(Exception):
                    self.store.deployments.remove_replica(old.id)

    def _failed_start(self, d: Deployment, t: Tracked, message: str, *, transient: bool = True) -> None:
        t.failed_starts += 1
        if t.failed_generation == d.generation:
            return
        if not transient:
            text = (
                "a replica failed to start with an error that would happen again, so it is not "
                "retried: fix it, then update the deployment (another model version or a changed "
                f"spec starts it again) or delete and create it; `aicloud deploy logs {d.name}` has "
                f"the replica's whole log.\n{message}"
            )
        elif t.failed_starts >= self.max_failed_starts:
            text = f"{t.failed_starts} replicas in a row failed to start; the last: {message}"
        else:
            return
        t.failed_generation, t.failed_traffic = d.generation, d.traffic
        self.store.deployments.set_status(d.id, DeploymentStatus.FAILED, text[:8000], expect=LIVE)
        log.warning("deployment %s failed: %s", d.name, message.splitlines()[0])

    def retire(self, ep: Endpoint, r: Replica, why: str) -> Replica:
        """Stop routing to ``r`` (registry first), mark it draining, SIGTERM it; returns its row."""
        slot = ep.replicas.get(r.id)
        ready = slot.ready if slot is not None else False
        self.registry.set_replica(ep, _slot(r, ready=ready, draining=True))
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
        self._release(ep, r, remove_row=True)

    def _release(self, ep: Endpoint, r: Replica, *, remove_row: bool = False) -> None:
        """Drop the slot, clean the executor's files up (the log stays), delete the row when asked,
        call ``on_removed`` and forget the replica."""
        self.registry.drop_replica(ep, r.id)
        if r.handle:
            try:
                self.executor.cleanup(r.handle)
            except Exception:
                log.exception("replica %s: cleanup failed", r.id)
        if remove_row:
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

    def _kill(self, handle: dict[str, Any]) -> None:
        try:
            self.executor.cancel(handle, 0.0)
            self.executor.cleanup(handle)
        except Exception:
            log.exception("could not stop the orphan replica %r", handle)

    def _kill_process(self, handle: dict[str, Any]) -> None:
        """Stop a replica's process at once, keeping its files (its log) for the failure."""
        try:
            self.executor.cancel(handle, 0.0)
        except Exception:
            log.exception("could not stop the replica %r", handle)

    # -- logs --------------------------------------------------------------------------------

    def _tail(self, handle: dict[str, Any]) -> str:
        try:
            return tail_lines(self.executor.log_path(handle), MESSAGE_LINES)
        except (OSError, ValueError):
            return ""

    def read_log(
        self, replica: Replica, lines: int, offset: int | None = None, limit: int = MAX_LOG_TAIL
    ) -> tuple[str, int]:
        """``replica``'s log (its stdout and stderr) and the byte offset just past what was read:
        its last ``lines`` lines (within the last :data:`MAX_LOG_TAIL` bytes), or with ``offset``
        the whole lines from there (at most ``limit`` bytes). Nothing, at ``offset`` or
        0, when it has no log (not launched yet, or cleaned up)."""
        if not replica.handle:
            return "", offset or 0
        try:
            path = self.executor.log_path(replica.handle)
            if offset is not None:
                return read_lines(path, offset, limit)
            end = path.stat().st_size
            return tail_lines(path, lines, max_bytes=MAX_LOG_TAIL, end=end), end
        except (OSError, ValueError, KeyError):  # KeyError: a handle of another executor
            return "", offset or 0

    # -- shutdown ----------------------------------------------------------------------------

    def stop_all(self, timeout: float) -> None:
        """SIGTERM every replica, then remove those that exit within ``timeout``."""
        pending: list[tuple[Endpoint, Replica]] = []
        try:
            deployments = self.store.deployments.list_all()
        except Exception:
            log.exception("cannot list deployments to stop their replicas")
            return
        for d in deployments:
            ep = self.registry.by_deployment(d.id) or self.registry.ensure(d.id, d.workspace_id, d.name)
            try:
                for r in self.store.deployments.replicas(d.id):
                    # ended already (its row stays for its log), or run by an edge node
                    if r.state != ReplicaState.FAILED and r.node_id is None:
                        pending.append((ep, self.retire(ep, r, "the control plane is stopping")))
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


def _permanent(exc: Exception) -> bool:
    """A launch error that would happen again: one the executor says is permanent, or the
    launcher's own 4xx (a secret or model version deleted since the deployment was made)."""
    if isinstance(exc, LaunchError):
        return exc.permanent
    return isinstance(exc, AicloudError) and exc.status_code < 500


def _slot(r: Replica, *, ready: bool = False, draining: bool = False, key: str = "") -> ReplicaSlot:
    """``r``'s routing slot (its version too, for the canary's split and the per-version stats)."""
    return ReplicaSlot(
        r.id, r.url, r.generation, ready=ready, draining=draining, key=key, version=r.model_version_id or ""
    )
