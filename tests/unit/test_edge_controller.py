"""The deployment controller with deployments placed on edge nodes (controllers/edge_placement.py):
in-memory deployments, fake nodes, the test harness of test_deployment_controller.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from test_deployment_controller import WS, Harness

from aicloud.entities.edge import EdgeNode
from aicloud.entities.serving import DeploymentStatus, ReplicaState
from aicloud.store.base import MetadataStore


class Nodes:
    """The edge node store's ``list`` over a dict the test changes."""

    def __init__(self) -> None:
        self.nodes: dict[str, EdgeNode] = {}

    def add(
        self, node_id: str, seen_s_ago: float | None = 1.0, address: str | None = None, **labels: str
    ) -> None:
        now = datetime.now(UTC)
        seen = None if seen_s_ago is None else now - timedelta(seconds=seen_s_ago)
        self.nodes[node_id] = EdgeNode(
            node_id, WS, f"pos-{node_id}", f"tok-{node_id}", now, labels or {"site": "shop1"}, seen, address
        )

    def list(self, workspace_id: str) -> list[EdgeNode]:
        return sorted(
            (n for n in self.nodes.values() if n.workspace_id == workspace_id), key=lambda n: n.name
        )


def harness(tmp_path: Path) -> tuple[Harness, Nodes]:
    h = Harness(tmp_path)
    nodes = Nodes()
    h.store = cast(MetadataStore, SimpleNamespace(deployments=h.deployments, edge_nodes=nodes))
    h.controller = h.new_controller()
    return h, nodes


def placed(**spec: Any) -> dict[str, Any]:
    return {"placement": {"edge": {"site": "shop1"}}, **spec}


def test_one_replica_per_matching_node_and_no_process(tmp_path: Path) -> None:
    h, nodes = harness(tmp_path)
    nodes.add("a")
    nodes.add("b")
    nodes.add("c", site="shop2")
    d = h.create(**placed(min_replicas=0, max_replicas=1))
    h.tick(3)
    rows = h.deployments.replicas(d.id)
    assert sorted(r.node_id or "" for r in rows) == ["a", "b"] and h.executor.submitted == []
    assert all(
        r.key_sealed and r.handle == {"edge": {"max_batch_size": 32, "max_wait_ms": 5.0, "threads": 1}}
        for r in rows
    )
    d = h.get(d)
    assert d.desired_replicas == 2 and d.status == DeploymentStatus.PENDING  # never scaled to zero
    assert "waiting for edge node(s) pos-a, pos-b" in (d.message or "")
    ep = h.registry.by_deployment(d.id)
    assert ep is not None and not ep.hold and ep.routable() == []


def test_a_ready_replica_on_an_online_node_with_an_address_is_routed_over_http(tmp_path: Path) -> None:
    h, nodes = harness(tmp_path)
    nodes.add("a", address="http://10.0.0.7")
    d = h.create(**placed())
    h.tick()
    (r,) = h.deployments.replicas(d.id)
    h.deployments.update_replica(r.id, state=ReplicaState.READY, port=18100)
    h.tick()
    ep = h.registry.by_deployment(d.id)
    assert ep is not None
    (slot,) = ep.routable()
    assert (slot.url, slot.channel) == ("http://10.0.0.7:18100", False)
    assert slot.key == h.controller.edge.serve_key(r) and slot.key
    assert h.get(d).status == DeploymentStatus.READY

    nodes.add("a", seen_s_ago=120, address="http://10.0.0.7")  # missed its heartbeats: offline
    h.tick()
    assert ep.routable() == []
    d = h.get(d)
    assert d.status == DeploymentStatus.PENDING and "offline: pos-a" in (d.message or "")
    nodes.add("a", address=None)  # back, but no address (behind NAT): local traffic only
    h.tick()
    assert ep.routable() == [] and h.deployments.replicas(d.id)[0].state == ReplicaState.READY


def test_a_node_that_stops_matching_loses_it_and_a_deleted_deployment_goes(tmp_path: Path) -> None:
    h, nodes = harness(tmp_path)
    nodes.add("a")
    d = h.create(**placed())
    h.tick()
    assert len(h.deployments.replicas(d.id)) == 1
    nodes.add("a", site="elsewhere")
    h.tick()
    assert h.deployments.replicas(d.id) == []
    assert "no edge node matches the placement site=shop1" in (h.get(d).message or "")
    nodes.add("a")
    h.tick()
    assert len(h.deployments.replicas(d.id)) == 1
    h.deployments.set_status(d.id, DeploymentStatus.DELETING)
    h.tick()
    assert h.deployments.list_all() == [] and h.registry.by_deployment(d.id) is None


def test_a_restarted_controller_routes_with_the_sealed_serve_key(tmp_path: Path) -> None:
    h, nodes = harness(tmp_path)
    nodes.add("a", address="http://10.0.0.7")
    d = h.create(**placed())
    h.tick()
    (r,) = h.deployments.replicas(d.id)
    h.deployments.update_replica(r.id, state=ReplicaState.READY, port=18100)
    h.tick()
    key = h.controller.edge.serve_key(r)
    h.restart()
    h.tick()
    ep = h.registry.by_deployment(d.id)
    assert ep is not None and [s.key for s in ep.routable()] == [key]
    assert [r.id for r in h.deployments.replicas(d.id)] == [r.id]  # the same replica, not a new one
