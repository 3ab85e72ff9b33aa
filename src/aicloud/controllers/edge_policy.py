"""Where an edge-placed deployment's replicas go (docs/edge.md, "Placement"): a pure function of the
deployment's selector, the workspace's edge nodes and the replicas placed already.

:func:`plan` places one replica of the current generation and version on each node whose labels
match every label of the selector, on at most ``cap`` nodes (None: all). Nodes that hold a replica
already keep it before others are chosen (a placement does not move while its node still matches),
then online nodes before offline ones, then by name. A node that no longer matches, was removed or
is beyond the cap loses its replicas. On a node that keeps its placement, a replica of an older
generation or version stays until one of the current ones is ready there (the node serves the old
one while it pulls and starts the new one), and a second current one is surplus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["EdgePlan", "NodeView", "PlacedReplica", "matches", "plan"]


@dataclass(frozen=True)
class NodeView:
    id: str
    name: str
    labels: Mapping[str, str]
    online: bool = True


@dataclass(frozen=True)
class PlacedReplica:
    id: str
    node_id: str
    generation: int
    version: str | None
    ready: bool = False


@dataclass
class EdgePlan:
    """What to do: ``add`` a replica of the current generation on each of these node ids; ``remove``
    these replicas (id → why); ``nodes``: the node ids the deployment is placed on."""

    add: list[str] = field(default_factory=list)
    remove: dict[str, str] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every label of the selector is the node's (an empty selector matches every node)."""
    return all(labels.get(key) == value for key, value in selector.items())


def plan(
    selector: Mapping[str, str],
    cap: int | None,
    nodes: list[NodeView],
    replicas: list[PlacedReplica],
    generation: int,
    version: str | None,
) -> EdgePlan:
    """See the module docstring."""
    holding = {r.node_id for r in replicas}
    eligible = [n for n in nodes if matches(selector, n.labels)]
    eligible.sort(key=lambda n: (n.id not in holding, not n.online, n.name, n.id))
    chosen = eligible if cap is None else eligible[:cap]
    chosen_ids = {n.id for n in chosen}
    known = {n.id for n in nodes}
    out = EdgePlan(nodes=[n.id for n in chosen])
    for r in replicas:
        if r.node_id not in known:
            out.remove[r.id] = "its edge node was removed"
        elif r.node_id not in chosen_ids:
            matched = any(n.id == r.node_id for n in eligible)
            out.remove[r.id] = (
                "more matching edge nodes than the placement's replicas"
                if matched
                else "its edge node no longer matches the placement"
            )
    for node in chosen:
        mine = [r for r in replicas if r.node_id == node.id]
        current = [r for r in mine if r.generation == generation and r.version == version]
        old = [r for r in mine if r not in current]
        if not current:
            out.add.append(node.id)
        else:
            keep = max(current, key=lambda r: r.ready)  # a ready one if any (the oldest of those)
            for r in current:
                if r is not keep:
                    out.remove[r.id] = "surplus"
        if any(r.ready for r in current):
            for r in old:
                out.remove[r.id] = f"replaced by generation {generation}"
    return out
