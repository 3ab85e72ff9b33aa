"""Edge nodes (docs/edge.md): join, list, remove; a node pulls signed bundles with its own token."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from aicloud.schemas.edge import EdgeNodeJoin, EdgeNodeJoined, EdgeNodeOut, EdgePullRequest, SigningKeyOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services.bundles import signing_public_key
from aicloud.server.services.edge_nodes import join_node, pull_bundle, remove_node
from aicloud.server.services.names import check_id

router = APIRouter(tags=["edge"])


@router.post("/edge/nodes", response_model=EdgeNodeJoined, status_code=201)
def edge_nodes_join(body: EdgeNodeJoin, principal: Member, state: State) -> EdgeNodeJoined:
    """Register an edge node: its own token (shown once) and the workspace's signing key to pin."""
    node, token = join_node(state, principal, body)
    key = SigningKeyOut(**signing_public_key(state, principal.workspace.id))
    return EdgeNodeJoined(node=EdgeNodeOut.model_validate(node), token=token, signing_key=key)


@router.get("/edge/nodes", response_model=list[EdgeNodeOut])
def edge_nodes_list(principal: Viewer, state: State) -> list[EdgeNodeOut]:
    return [EdgeNodeOut.model_validate(n) for n in state.store.edge_nodes.list(principal.workspace.id)]


@router.delete("/edge/nodes/{node_id}", status_code=204)
def edge_nodes_delete(node_id: str, principal: Member, state: State) -> Response:
    """Remove a node and revoke its token: its next call is a 401 and it deletes its bundles."""
    remove_node(state, principal, check_id(node_id, "node_id"))
    return Response(status_code=204)


@router.post("/edge/nodes/{node_id}/bundle", response_class=FileResponse)
def edge_node_pull(node_id: str, body: EdgePullRequest, principal: Member, state: State) -> FileResponse:
    """The signed bundle of a model version, for the node itself (its own token only)."""
    folder = Path(tempfile.mkdtemp(prefix="aicloud-bundle-out-"))
    try:
        out = folder / "model.bundle"
        pull_bundle(state, principal, check_id(node_id, "node_id"), body.model, out)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        out,
        media_type="application/x-tar",
        filename=out.name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
