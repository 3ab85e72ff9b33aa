"""The edge placement's store parts on SQLite and PostgreSQL (migration 0011): replicas placed on a
node, a node's status report, and a removed node taking its replicas' rows with it."""

from __future__ import annotations

from aicloud.entities import Role
from aicloud.entities.serving import ReplicaState
from aicloud.store import MetadataStore

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
)


def test_replicas_on_a_node_its_report_and_its_removal(store: MetadataStore) -> None:
    ws = store.workspaces.create("edge")
    store.tokens.create(token_id="tok_n", workspace_id=ws.id, name="n", role=Role.MEMBER, secret_hash="h")
    node = store.edge_nodes.create(workspace_id=ws.id, name="pos", labels={"site": "shop1"}, token_id="tok_n")
    assert (node.address, node.requests, node.errors) == (None, 0, 0)
    d = store.deployments.create(
        workspace_id=ws.id, name="dep", spec={"placement": {"edge": {}}}, model_version_id=None, desired=1
    )
    here = store.deployments.add_replica(d.id, generation=1, port=8000, handle={"pid": 1})
    placed = store.deployments.add_replica(d.id, generation=1, port=0, handle={}, node_id=node.id)
    assert placed.node_id == node.id and here.node_id is None
    assert [r.id for r in store.deployments.node_replicas(node.id)] == [placed.id]

    ready = store.deployments.update_replica(placed.id, state=ReplicaState.READY, port=18100, message="")
    assert (ready.port, ready.state, ready.ready_at is not None) == (18100, ReplicaState.READY, True)
    store.edge_nodes.report(node.id, address="http://10.0.0.7", requests=5, errors=1)
    store.edge_nodes.report(node.id, address="http://10.0.0.7", requests=2, errors=0)
    seen = store.edge_nodes.get(ws.id, node.id)
    assert (seen.address, seen.requests, seen.errors) == ("http://10.0.0.7", 7, 1)
    assert seen.last_seen_at is not None

    store.tokens.delete(ws.id, "tok_n")  # the node goes with its token, its replicas with the node
    assert store.edge_nodes.list(ws.id) == []
    assert [r.id for r in store.deployments.replicas(d.id)] == [here.id]
