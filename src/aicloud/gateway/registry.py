"""The live routing table shared by the deployment controller and the gateway.

The controller (a thread) writes it: which replicas of which deployment are ready,
draining or gone. The gateway (the event loop) reads it to pick a replica, counts
requests in flight per replica, records the last request time, and asks for a start
when a request arrives for a deployment at zero replicas. The autoscaler reads the
in-flight counts. Plain attribute reads and writes of ints and floats are atomic in
CPython; structural changes take the lock.

Each replica has its own key (``ReplicaSlot.key``), the bearer the gateway presents to it
and nothing else does; the controller sets it with the slot, from the replica's launch or,
after a control-plane restart, from the store (where it is sealed).

A request held for a cold deployment registers a *waker* on its endpoint
(:meth:`EndpointRegistry.add_waker`); :meth:`EndpointRegistry.set_replica` calls the wakers
(from the controller's thread) as soon as a replica becomes routable, so the held request
goes out at once instead of at its next poll.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aicloud.gateway.stats import EndpointStats


@dataclass
class ReplicaSlot:
    replica_id: str
    url: str  # http://127.0.0.1:<port>
    generation: int
    ready: bool = False
    draining: bool = False
    inflight: int = 0  # requests the gateway has sent and not yet seen answered
    key: str = field(default="", repr=False)  # bearer the gateway presents to this replica (a secret)
    version: str = ""  # the model version id it serves ("" for a Service): its traffic share and stats
    channel: bool = True  # speaks the multiplexed channel (an edge replica: plain HTTP only)


@dataclass
class Endpoint:
    """Routing state of one deployment."""

    deployment_id: str
    workspace_id: str
    name: str
    replicas: dict[str, ReplicaSlot] = field(default_factory=dict)
    last_request: float = field(default_factory=time.monotonic)
    start_requested: bool = False  # a request is held for a cold deployment
    waiting: int = 0  # requests held while no replica is ready
    timeout_s: float | None = None  # the spec's timeout_s: how long the gateway holds a cold request
    wakers: list[Callable[[], None]] = field(default_factory=list)  # held requests to wake on ready
    #: A canary's weights by version id (the controller sets them); None: one version, no split.
    traffic: dict[str, int] | None = None
    stats: EndpointStats = field(default_factory=EndpointStats)  # per version, since start
    #: Hold a request while no replica is ready (a cold start); False (edge-placed): 503 at once.
    hold: bool = True

    def routable(self) -> list[ReplicaSlot]:
        return [r for r in list(self.replicas.values()) if r.ready and not r.draining]

    @property
    def inflight(self) -> int:
        return sum(r.inflight for r in list(self.replicas.values())) + self.waiting

    def choose(self, exclude: set[str] | None = None) -> ReplicaSlot | None:
        """Least outstanding requests among ready, non-draining replicas (ties: newest generation).

        With ``traffic`` (a canary), a version is drawn first by its weight among the versions that
        have such a replica, then the replica within it; replicas of a version without weight (one
        being replaced) take calls only while no weighted version has a replica to take them."""
        candidates = [r for r in self.routable() if not exclude or r.replica_id not in exclude]
        if not candidates:
            return None
        if self.traffic is not None and len(candidates) > 1:
            candidates = _draw_version(candidates, self.traffic)
        return min(candidates, key=lambda r: (r.inflight, -r.generation))


def _draw_version(candidates: list[ReplicaSlot], traffic: dict[str, int]) -> list[ReplicaSlot]:
    """The candidates of one version, drawn by ``traffic`` weight among the versions present."""
    weights: dict[str, int] = {}
    for slot in candidates:
        weights[slot.version] = traffic.get(slot.version, 0)
    total = sum(weights.values())
    if total <= 0:
        return candidates
    point = random.random() * total
    for version, weight in weights.items():
        point -= weight
        if point < 0 and weight > 0:
            return [slot for slot in candidates if slot.version == version]
    return candidates


class EndpointRegistry:
    """Endpoints by (workspace id, deployment name), plus a hook to wake the controller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        self.on_demand: Callable[[], None] = lambda: None  # the controller's wake()

    def get(self, workspace_id: str, name: str) -> Endpoint | None:
        return self._endpoints.get((workspace_id, name))

    def by_deployment(self, deployment_id: str) -> Endpoint | None:
        return next((e for e in list(self._endpoints.values()) if e.deployment_id == deployment_id), None)

    def ensure(self, deployment_id: str, workspace_id: str, name: str) -> Endpoint:
        with self._lock:
            key = (workspace_id, name)
            ep = self._endpoints.get(key)
            if ep is None or ep.deployment_id != deployment_id:
                ep = Endpoint(deployment_id, workspace_id, name)
                self._endpoints[key] = ep
            return ep

    def remove(self, deployment_id: str) -> None:
        with self._lock:
            for key, ep in list(self._endpoints.items()):
                if ep.deployment_id == deployment_id:
                    del self._endpoints[key]

    def set_replica(self, ep: Endpoint, slot: ReplicaSlot) -> None:
        with self._lock:
            current = ep.replicas.get(slot.replica_id)
            if current is None:
                ep.replicas[slot.replica_id] = slot
            else:  # keep the live in-flight count (and the key, unless the slot brings one)
                current.url, current.ready, current.draining = slot.url, slot.ready, slot.draining
                current.generation = slot.generation
                current.version = slot.version or current.version
                current.key = slot.key or current.key
                current.channel = slot.channel
            wakers = list(ep.wakers) if slot.ready and not slot.draining else []
        for wake in wakers:
            wake()

    def add_waker(self, ep: Endpoint, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (from any thread) when a replica of ``ep`` becomes routable."""
        with self._lock:
            ep.wakers.append(wake)

    def remove_waker(self, ep: Endpoint, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in ep.wakers:
                ep.wakers.remove(wake)

    def drop_replica(self, ep: Endpoint, replica_id: str) -> None:
        with self._lock:
            ep.replicas.pop(replica_id, None)

    def demand(self, ep: Endpoint) -> None:
        """A request arrived for a deployment with no ready replica: ask the controller to start one."""
        ep.start_requested = True
        self.on_demand()

    def suspect(self, ep: Endpoint) -> None:
        """A replica of ``ep`` could not be reached: ask the controller to look at its processes now."""
        self.on_demand()

    def all(self) -> list[Endpoint]:
        return list(self._endpoints.values())
