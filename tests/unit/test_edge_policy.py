"""The pure placement policy of edge deployments (controllers/edge_policy.py)."""

from __future__ import annotations

from aicloud.controllers.edge_policy import NodeView, PlacedReplica, matches, plan


def node(i: str, online: bool = True, **labels: str) -> NodeView:
    return NodeView(i, f"node-{i}", labels or {"site": "shop1"}, online)


def test_a_selector_matches_when_every_label_does() -> None:
    assert matches({"site": "shop1"}, {"site": "shop1", "zone": "eu"})
    assert matches({}, {"anything": "x"})
    assert not matches({"site": "shop1", "zone": "us"}, {"site": "shop1", "zone": "eu"})
    assert not matches({"site": "shop1"}, {})


def test_one_replica_per_matching_node() -> None:
    nodes = [node("a"), node("b"), node("c", site="shop2")]
    out = plan({"site": "shop1"}, None, nodes, [], 1, "v1")
    assert sorted(out.add) == ["a", "b"] and out.remove == {} and sorted(out.nodes) == ["a", "b"]


def test_nodes_already_placed_are_kept_under_a_cap_then_online_ones_by_name() -> None:
    nodes = [node("a"), node("b", online=False), node("c"), node("d")]
    held = [PlacedReplica("r1", "d", 1, "v1", ready=True)]
    out = plan({"site": "shop1"}, 2, nodes, held, 1, "v1")
    assert out.nodes == ["d", "a"] and out.add == ["a"] and out.remove == {}
    out = plan({"site": "shop1"}, 3, [node("b", online=False), node("a")], [], 1, "v1")
    assert out.nodes == ["a", "b"]  # an offline node last, but still placed on


def test_a_node_that_stops_matching_or_is_removed_loses_its_replica() -> None:
    held = [PlacedReplica("r1", "a", 1, "v1"), PlacedReplica("r2", "gone", 1, "v1")]
    out = plan({"site": "shop1"}, None, [node("a", site="shop2")], held, 1, "v1")
    assert out.remove == {
        "r1": "its edge node no longer matches the placement",
        "r2": "its edge node was removed",
    }
    assert out.add == [] and out.nodes == []


def test_an_old_generation_stays_until_the_new_one_is_ready_on_its_node() -> None:
    old = PlacedReplica("r1", "a", 1, "v1", ready=True)
    out = plan({}, None, [node("a")], [old], 2, "v2")
    assert out.add == ["a"] and out.remove == {}
    new = PlacedReplica("r2", "a", 2, "v2")
    assert plan({}, None, [node("a")], [old, new], 2, "v2").remove == {}
    ready = PlacedReplica("r2", "a", 2, "v2", ready=True)
    assert plan({}, None, [node("a")], [old, ready], 2, "v2").remove == {"r1": "replaced by generation 2"}


def test_a_second_current_replica_on_a_node_is_surplus() -> None:
    a = PlacedReplica("r1", "a", 1, "v1")
    b = PlacedReplica("r2", "a", 1, "v1", ready=True)
    assert plan({}, None, [node("a")], [a, b], 1, "v1").remove == {"r1": "surplus"}
