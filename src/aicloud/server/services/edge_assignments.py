"""What an edge node serves and what it reports (docs/edge.md, "Placement"), as the node itself.

The deployment controller places replicas on nodes (``controllers/edge_placement.py``: one
``replicas`` row per node, ``node_id`` set, a serve key sealed in ``key_sealed``). A node asks for
its **assignments** (:func:`node_assignments`: each row with its deployment, model version, bundle
ref, serve key and batching) and reports their **status** (:func:`report_status`: each replica's
state and port, its address, request counts); both count as its heartbeat. Only the node's own token
reaches them (another node's id is a 403, as for a pull).

The assignments' ``etag`` is a digest of what they say (serve keys left out) and ``heartbeat_s``:
it changes exactly when the node has something to do.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from urllib.parse import urlsplit

from aicloud.artifacts.runtimes import kind_of
from aicloud.auth import Principal
from aicloud.controllers.edge_placement import EdgeChanges, edge_settings, node_online
from aicloud.entities import ModelVersion
from aicloud.entities.edge import EdgeNode
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.edge import EdgeAssignment, EdgeAssignments, EdgeNodeStatus
from aicloud.server.services.edge_nodes import calling_node
from aicloud.server.services.replicas import REPLICA_KEY_AAD
from aicloud.server.state import AppState

__all__ = [
    "check_bundleable",
    "edge_changes",
    "heartbeat_s",
    "node_assignments",
    "report_status",
    "serve_key",
]

log = logging.getLogger("aicloud.server.edge")


def check_bundleable(version: ModelVersion) -> None:
    """A 422 naming ``placement`` unless ``version`` can be a bundle: ONNX already, or a built-in
    model (exported to ONNX when first pulled, checked against it)."""
    if kind_of(version.config, version.files) not in ("onnx", "mlp", "cnn"):
        raise ValidationError.field(
            "placement",
            f"{version.name}:{version.version} cannot be bundled for edge nodes: it is neither ONNX nor "
            "a built-in model (export it to ONNX first: `aicloud model export`)",
        )


def edge_changes(state: AppState) -> EdgeChanges | None:
    """The controller's record of which nodes' assignments changed (None without a controller)."""
    return state.deployments.edge.changes if state.deployments is not None else None


def heartbeat_s(state: AppState) -> int:
    """How often a node should call to stay online: a third of ``AICLOUD_EDGE_OFFLINE_AFTER_S``."""
    return max(1, int(state.settings.edge_offline_after_s // 3))


def serve_key(state: AppState, r: Replica) -> str | None:
    """An edge replica's serve key, opened from its row (sealed as a replica's key is)."""
    if state.deployments is not None:
        return state.deployments.edge.serve_key(r)
    if r.key_sealed is None:
        return None
    return state.blobs.unseal(r.key_sealed, REPLICA_KEY_AAD + r.id.encode()).decode()


def _etag(beat: int, assignments: list[EdgeAssignment]) -> str:
    listed = [a.model_dump(mode="json", exclude={"serve_key"}) for a in assignments]
    text = json.dumps({"heartbeat_s": beat, "assignments": listed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _assignments(state: AppState, node: EdgeNode) -> EdgeAssignments:
    out: list[EdgeAssignment] = []
    deployments: dict[str, Deployment | None] = {}
    for r in state.store.deployments.node_replicas(node.id):
        if r.deployment_id not in deployments:
            try:
                deployments[r.deployment_id] = state.store.deployments.get_any(r.deployment_id)
            except NotFoundError:
                deployments[r.deployment_id] = None
        d = deployments[r.deployment_id]
        version_id = r.model_version_id or (d.model_version_id if d else None)
        if d is None or d.status == DeploymentStatus.DELETING or version_id is None:
            continue
        try:
            version = state.store.models.get_version_by_id(d.workspace_id, version_id)
        except NotFoundError:
            continue  # deleted since: the controller's next pass removes the replica
        key = serve_key(state, r)
        if key is None:
            continue
        settings = r.handle.get("edge") or edge_settings(d.spec)  # as placed
        out.append(
            EdgeAssignment(
                replica_id=r.id,
                deployment=d.name,
                deployment_id=d.id,
                model=version.name,
                version=version.version,
                version_id=version.id,
                bundle=f"{version.name}:{version.version}",
                serve_key=key,
                max_batch_size=int(settings["max_batch_size"]),
                max_wait_ms=float(settings["max_wait_ms"]),
                threads=int(settings["threads"]),
            )
        )
    beat = heartbeat_s(state)
    return EdgeAssignments(etag=_etag(beat, out), heartbeat_s=beat, assignments=out)


def node_assignments(state: AppState, principal: Principal, node_id: str) -> tuple[EdgeNode, EdgeAssignments]:
    """The calling node's assignments now (a heartbeat); 403 for another node's id."""
    node = calling_node(state, principal, node_id)
    state.store.edge_nodes.touch(node.id)
    return node, _assignments(state, node)


def check_address(address: str | None) -> None:
    """A 422 naming ``address`` for one the gateway must never be sent to: no host, or a link-local,
    unspecified or multicast IP (a cloud's metadata service lives at 169.254.169.254)."""
    if address is None:
        return
    host = urlsplit(address).hostname
    if not host:
        raise ValidationError.field("address", f"{address!r} names no host; give http://HOST")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: resolved when the gateway connects
    if ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        raise ValidationError.field(
            "address", f"{host} is a link-local, unspecified or multicast address: give the node's own"
        )


def report_status(state: AppState, principal: Principal, node_id: str, body: EdgeNodeStatus) -> str:
    """Record the calling node's report (a heartbeat): its address, each of its replicas' state,
    port and message (ids it no longer holds are ignored), the requests and errors served. Wakes the
    controller when routing may change. Returns the assignments' current etag."""
    node = calling_node(state, principal, node_id)
    check_address(body.address)
    rows = {r.id: r for r in state.store.deployments.node_replicas(node.id)}
    changed = body.address != node.address or not node_online(
        node, state.settings.edge_offline_after_s, edge_changes(state)
    )
    requests = errors = 0
    for item in body.assignments:
        r = rows.get(item.replica_id)
        if r is None:
            continue  # an assignment removed since the node read it
        requests += item.requests
        errors += item.errors
        ep = state.endpoints.by_deployment(r.deployment_id)
        if ep is not None and (item.requests or item.errors):
            ep.stats.record_edge(r.model_version_id or "", item.requests, item.errors, item.latency_s_sum)
        new = ReplicaState(item.state)
        message = item.message[:8000]
        port = item.port or 0
        if new != r.state or port != r.port or message != (r.message or ""):
            state.store.deployments.update_replica(r.id, state=new, port=port, message=message)
            changed = True
            if new == ReplicaState.FAILED:
                log.warning("edge node %s: replica %s failed: %s", node.name, r.id, message[:200])
    state.store.edge_nodes.report(node.id, address=body.address, requests=requests, errors=errors)
    if changed:
        state.wake_deployments()
    return _assignments(state, node).etag
