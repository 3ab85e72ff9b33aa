"""Edge nodes (docs/edge.md): join, list, remove; a node pulls signed bundles with its own token."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from aicloud.controllers.edge_placement import node_online
from aicloud.entities.edge import EdgeNode
from aicloud.errors import NotFoundError, UnauthenticatedError
from aicloud.schemas.edge import (
    EdgeAssignments,
    EdgeNodeJoin,
    EdgeNodeJoined,
    EdgeNodeOut,
    EdgeNodeStatus,
    EdgePullRequest,
    EdgeStatusAck,
    SigningKeyOut,
)
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services.bundles import signing_public_key
from aicloud.server.services.edge_assignments import edge_changes, node_assignments, report_status
from aicloud.server.services.edge_nodes import join_node, pull_bundle, remove_node
from aicloud.server.services.names import check_id
from aicloud.server.state import AppState

router = APIRouter(tags=["edge"])


@router.post("/edge/nodes", response_model=EdgeNodeJoined, status_code=201)
def edge_nodes_join(body: EdgeNodeJoin, principal: Member, state: State) -> EdgeNodeJoined:
    """Register an edge node: its own token (shown once) and the workspace's signing key to pin."""
    node, token = join_node(state, principal, body)
    key = SigningKeyOut(**signing_public_key(state, principal.workspace.id))
    return EdgeNodeJoined(node=_node_out(state, node), token=token, signing_key=key)


def _node_out(state: AppState, node: EdgeNode) -> EdgeNodeOut:
    online = node_online(node, state.settings.edge_offline_after_s, edge_changes(state))
    return EdgeNodeOut.model_validate(node).model_copy(update={"status": "online" if online else "offline"})


@router.get("/edge/nodes", response_model=list[EdgeNodeOut])
def edge_nodes_list(principal: Viewer, state: State) -> list[EdgeNodeOut]:
    """The workspace's nodes: labels, ``online``/``offline``, last call, address, requests served."""
    return [_node_out(state, n) for n in state.store.edge_nodes.list(principal.workspace.id)]


@router.delete("/edge/nodes/{node_id}", status_code=204)
def edge_nodes_delete(node_id: str, principal: Member, state: State) -> Response:
    """Remove a node and revoke its token: its next call is a 401 and it deletes its bundles."""
    remove_node(state, principal, check_id(node_id, "node_id"))
    changes = edge_changes(state)
    if changes is not None:  # its open long-poll ends now, with a 401
        changes.notify([node_id])
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


def _unquoted(etag: str | None) -> str | None:
    if etag is None:
        return None
    etag = etag.strip()
    etag = etag.removeprefix("W/")
    return etag.strip('"')


@router.get("/edge/nodes/{node_id}/assignments", response_model=EdgeAssignments)
async def edge_node_assignments(
    node_id: str,
    principal: Member,
    state: State,
    wait: Annotated[float, Query(ge=0, le=30, description="long-poll: wait up to this many seconds")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """The calling node's assignments (its own token only; a heartbeat). With ``If-None-Match`` equal
    to the current etag, wait up to ``wait`` seconds for a change (answered at once when one comes),
    then 304."""
    node_id = check_id(node_id, "node_id")
    known = _unquoted(if_none_match)
    changes = edge_changes(state)
    deadline = time.monotonic() + wait
    polled = False
    while True:
        seq = changes.seq(node_id) if changes is not None else 0
        try:
            node, body = await run_in_threadpool(node_assignments, state, principal, node_id)
        except NotFoundError:
            if not polled:
                raise
            raise UnauthenticatedError(
                "this edge node was removed while it waited; its token is revoked"
            ) from None
        polled = True
        left = deadline - time.monotonic()
        if body.etag != known or left <= 0 or changes is None or changes.closed:
            break
        await changes.wait(node.id, seq, left)
    headers = {"ETag": body.etag}
    if body.etag == known:
        return Response(status_code=304, headers=headers)
    return JSONResponse(body.model_dump(mode="json"), headers=headers)


@router.put("/edge/nodes/{node_id}/status", response_model=EdgeStatusAck)
def edge_node_status(node_id: str, body: EdgeNodeStatus, principal: Member, state: State) -> EdgeStatusAck:
    """The calling node's report (its own token only; a heartbeat): its address and each assignment's
    state, port and request counts since its previous report. Answers the assignments' etag."""
    return EdgeStatusAck(etag=report_status(state, principal, check_id(node_id, "node_id"), body))
