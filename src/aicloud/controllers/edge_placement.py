"""Deployments placed on edge nodes (docs/edge.md, "Placement"): the deployment controller's
:class:`EdgePlacement` keeps one replica row per matching node instead of starting processes.

An edge-placed deployment (``spec.placement.edge``, a label selector) never reaches the executor.
Each pass over one (:meth:`EdgePlacement.reconcile`):

1. the workspace's nodes and the deployment's replica rows go through the pure policy
   (:func:`aicloud.controllers.edge_policy.plan`): a row is added for each chosen node without a
   current replica (state ``starting``, port 0, no handle, ``node_id`` set, a fresh random
   **serve key** sealed in ``key_sealed`` as a replica's key is), and the rows of nodes that no
   longer match, were removed or are beyond the cap, or that a ready current replica replaced, are
   deleted. The nodes whose assignments changed are told at once (:class:`EdgeChanges`, which
   wakes their long-polls).
2. every row gets a gateway slot: routable when the node reported it ``ready`` on a port, the node
   reported an address, and the node is **online** (its last call younger than
   ``AICLOUD_EDGE_OFFLINE_AFTER_S``, or a long-poll of it open now). The gateway reaches it over
   plain keep-alive HTTP (no channel) at ``http://<the address's host>:<port>`` with the serve
   key as bearer, and holds no request for it (``Endpoint.hold`` is off: none ready is a 503 at
   once, as no cold start can help).
3. ``desired_replicas`` is the number of nodes placed on; the status is ``ready`` while a current
   replica is ready on an online node, else ``pending`` with a message saying what it waits for.
   Scale-to-zero and the autoscaler do not apply.

A deployment being deleted has its rows deleted (the nodes stop serving them at their next poll),
then the deployment. Nodes report their replicas' states through ``PUT /edge/nodes/{id}/status``
(``aicloud.server.services.edge_assignments``), which wakes the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aicloud.controllers.edge_policy import NodeView, PlacedReplica, plan
from aicloud.controllers.replicas import LIVE, ReplicaKeys
from aicloud.entities.edge import EdgeNode
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.gateway.registry import Endpoint, EndpointRegistry, ReplicaSlot
from aicloud.store.base import MetadataStore

__all__ = ["EdgeChanges", "EdgePlacement", "edge_settings", "is_edge", "node_online", "replica_url"]

log = logging.getLogger("aicloud.controllers.deployments")


def edge_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """How a node serves a replica of a deployment with this spec: ``max_batch_size``, ``max_wait_ms``
    and ``threads`` (``cpus // batch_workers``). Kept in the replica's ``handle`` (``{"edge": ...}``)
    when it is placed, so a replica of an older generation keeps the settings it was placed with."""
    cpus = int(spec.get("cpus") or 1)
    wait = spec.get("max_wait_ms")
    return {
        "max_batch_size": int(spec.get("max_batch_size") or 32),
        "max_wait_ms": float(wait if wait is not None else 5.0),
        "threads": max(1, cpus // int(spec.get("batch_workers") or 1)),
    }


def is_edge(d: Deployment) -> bool:
    """Whether ``d`` is placed on edge nodes."""
    placement = d.spec.get("placement")
    return isinstance(placement, dict) and placement.get("edge") is not None


class EdgeChanges:
    """Which nodes' assignments changed, for the nodes' long-polls: the controller (a thread)
    calls :meth:`notify`; a route (the event loop) awaits :meth:`wait`. Also knows which nodes have
    a long-poll open now (:meth:`polling`: such a node is online however long it waits)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._polls: dict[str, int] = {}
        self.closed = False  # the server is stopping: polls answer at once

    def close(self) -> None:
        """The server is stopping: answer every open long-poll now; later ones do not wait."""
        with self._lock:
            self.closed = True
            woken = [w for waiting in self._waiters.values() for w in waiting]
            self._waiters.clear()
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def seq(self, node_id: str) -> int:
        """A counter of the node's changes: take it before reading the assignments."""
        return self._seq.get(node_id, 0)

    def notify(self, node_ids: Iterable[str]) -> None:
        """The assignments of ``node_ids`` changed: wake their long-polls (from any thread)."""
        woken: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        with self._lock:
            for node_id in set(node_ids):
                self._seq[node_id] = self._seq.get(node_id, 0) + 1
                woken.extend(self._waiters.pop(node_id, []))
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    def polling(self, node_id: str) -> bool:
        return self._polls.get(node_id, 0) > 0

    async def wait(self, node_id: str, seq: int, timeout: float) -> None:
        """Return when the node's counter is past ``seq`` (at once if it is already), or after
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.closed or self._seq.get(node_id, 0) != seq:
                return
            self._waiters.setdefault(node_id, []).append((loop, future))
            self._polls[node_id] = self._polls.get(node_id, 0) + 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        finally:
            with self._lock:
                waiting = self._waiters.get(node_id, [])
                if (loop, future) in waiting:
                    waiting.remove((loop, future))
                self._polls[node_id] -= 1
                if not self._polls[node_id]:
                    del self._polls[node_id]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def node_online(node: EdgeNode, offline_after_s: float, changes: EdgeChanges | None = None) -> bool:
    """Whether ``node`` called within ``offline_after_s`` seconds (or has a long-poll open now)."""
    if changes is not None and changes.polling(node.id):
        return True
    if node.last_seen_at is None:
        return False
    return (datetime.now(UTC) - node.last_seen_at).total_seconds() < offline_after_s


def replica_url(address: str | None, port: int) -> str | None:
    """``http://<the address's host>:<port>``; None without an address or a port."""
    if not address or port <= 0:
        return None
    host = urlsplit(address).hostname
    if not host:
        return None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EdgePlacement:
    """The deployment controller's steps for edge-placed deployments (see the module docstring)."""

    def __init__(
        self,
        store: MetadataStore,
        registry: EndpointRegistry,
        *,
        keys: ReplicaKeys | None,
        offline_after_s: float,
        changes: EdgeChanges | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.keys = keys
        self.offline_after_s = offline_after_s
        self.changes = changes or EdgeChanges()
        self._keys: dict[str, str] = {}  # replica id → its serve key (opened once)

    def reconcile(self, d: Deployment, ep: Endpoint) -> bool:
        """One pass over edge-placed ``d``; True when it changed nothing (settled)."""
        ep.hold = False
        rows = self.store.deployments.replicas(d.id)
        if d.status == DeploymentStatus.DELETING:
            self._remove(ep, rows)
            self.store.deployments.delete(d.id)
            self.registry.remove(d.id)
            log.info("deployment %s deleted", d.name)
            return False
        placement = d.spec.get("placement") or {}
        selector = {str(k): str(v) for k, v in (placement.get("edge") or {}).items()}
        nodes = {n.id: n for n in self.store.edge_nodes.list(d.workspace_id)}
        online = {n.id: node_online(n, self.offline_after_s, self.changes) for n in nodes.values()}
        views = [NodeView(n.id, n.name, n.labels, online[n.id]) for n in nodes.values()]
        placed = [
            PlacedReplica(
                r.id,
                r.node_id or "",
                r.generation,
                r.model_version_id or d.model_version_id,
                ready=r.state == ReplicaState.READY,
            )
            for r in rows
        ]
        cap = placement.get("replicas")
        decided = plan(selector, cap, views, placed, d.generation, d.model_version_id)
        changed = bool(decided.add or decided.remove)
        if decided.remove:
            gone = [r for r in rows if r.id in decided.remove]
            for r in gone:
                log.info("deployment %s: edge replica %s removed: %s", d.name, r.id, decided.remove[r.id])
            self._remove(ep, gone)
            rows = [r for r in rows if r.id not in decided.remove]
        for node_id in decided.add:
            rows.append(self._add(d, node_id))
            log.info("deployment %s: edge replica placed on node %s", d.name, nodes[node_id].name)
        if decided.add:
            self.changes.notify(decided.add)
        ready_now = self._slots(d, ep, rows, nodes, online)
        ep.stats.note_ready(ready_now)
        if len(decided.nodes) != d.desired_replicas:
            self.store.deployments.set_desired(d.id, len(decided.nodes))
            changed = True
        return self._status(d, rows, nodes, online, selector, ready_now) and not changed

    # -- rows and slots ----------------------------------------------------------------------

    def _add(self, d: Deployment, node_id: str) -> Replica:
        r = self.store.deployments.add_replica(
            d.id,
            generation=d.generation,
            port=0,
            handle={"edge": edge_settings(d.spec)},  # what the node runs it with (no process here)
            model_version_id=d.model_version_id,
            node_id=node_id,
        )
        key = secrets.token_urlsafe(32)
        self._keys[r.id] = key
        if self.keys is not None:
            r = self.store.deployments.update_replica(r.id, key_sealed=self.keys.seal_key(r.id, key))
        return r

    def _remove(self, ep: Endpoint, rows: list[Replica]) -> None:
        """Stop routing to ``rows``, delete them, and tell their nodes (their long-polls wake)."""
        nodes = set()
        for r in rows:
            self.registry.drop_replica(ep, r.id)
            self.store.deployments.remove_replica(r.id)
            self._keys.pop(r.id, None)
            if r.node_id:
                nodes.add(r.node_id)
        if nodes:
            self.changes.notify(nodes)

    def serve_key(self, r: Replica) -> str | None:
        """The replica's serve key (from memory, else its sealed copy); None when it has none."""
        key = self._keys.get(r.id)
        if key is None and self.keys is not None and r.key_sealed is not None:
            try:
                key = self._keys[r.id] = self.keys.open_key(r.id, r.key_sealed)
            except Exception as exc:
                log.warning("edge replica %s: its stored key does not open (%s)", r.id, type(exc).__name__)
        return key

    def _slots(
        self,
        d: Deployment,
        ep: Endpoint,
        rows: list[Replica],
        nodes: dict[str, EdgeNode],
        online: dict[str, bool],
    ) -> int:
        """Give every row its gateway slot (routable as the module docstring says); returns how many
        current replicas are routable."""
        keep = {r.id for r in rows}
        for rid in [rid for rid in ep.replicas if rid not in keep]:  # its node was removed
            self.registry.drop_replica(ep, rid)
            self._keys.pop(rid, None)
        ready = 0
        for r in rows:
            node = nodes.get(r.node_id or "")
            url = replica_url(node.address if node else None, r.port)
            key = self.serve_key(r)
            routable = (
                r.state == ReplicaState.READY
                and node is not None
                and online.get(node.id, False)
                and url is not None
                and key is not None
            )
            slot = ReplicaSlot(
                r.id,
                url or "http://127.0.0.1:0",
                r.generation,
                ready=routable,
                key=key or "",
                version=r.model_version_id or "",
                channel=False,
            )
            self.registry.set_replica(ep, slot)
            if routable and r.generation == d.generation:
                ready += 1
        return ready

    # -- status ------------------------------------------------------------------------------

    def _status(
        self,
        d: Deployment,
        rows: list[Replica],
        nodes: dict[str, EdgeNode],
        online: dict[str, bool],
        selector: dict[str, str],
        ready_now: int,
    ) -> bool:
        """Set the deployment's status and message; True when they were right already."""
        if ready_now:
            status, message = DeploymentStatus.READY, None
        else:
            status, message = DeploymentStatus.PENDING, self._waiting_for(d, rows, nodes, online, selector)
        if status == d.status and message == d.message:
            return True
        self.store.deployments.set_status(d.id, status, message, expect=LIVE)
        return False

    @staticmethod
    def _waiting_for(
        d: Deployment,
        rows: list[Replica],
        nodes: dict[str, EdgeNode],
        online: dict[str, bool],
        selector: dict[str, str],
    ) -> str:
        if not rows:
            labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "(any)"
            return (
                f"no edge node matches the placement {labels}; join one with "
                f"`aicloud edge join URL --token T --labels {labels}`"
            )
        failed = [r for r in rows if r.state == ReplicaState.FAILED]
        if failed:
            r = failed[-1]
            node = nodes.get(r.node_id or "")
            return (
                f"edge replica {r.id} on node {node.name if node else r.node_id} failed: {r.message or ''}"[
                    :8000
                ]
            )
        offline = sorted(nodes[r.node_id].name for r in rows if r.node_id in nodes and not online[r.node_id])
        if offline:
            return f"edge node(s) offline: {', '.join(offline)}"
        names = sorted({nodes[r.node_id].name for r in rows if r.node_id in nodes})
        return f"waiting for edge node(s) {', '.join(names)} to report the replica ready"
