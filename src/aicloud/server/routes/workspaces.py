"""Workspaces (tenants). Creating one needs an admin token of the ``default`` workspace."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from aicloud.entities import Role
from aicloud.schemas import WhoAmIOut, WorkspaceCreate, WorkspaceCreated, WorkspaceOut
from aicloud.schemas.edge import SigningKeyOut
from aicloud.server.bootstrap import DEFAULT_WORKSPACE
from aicloud.server.deps import Admin, State, Viewer
from aicloud.server.services.bundles import signing_public_key
from aicloud.server.services.tokens import create_workspace

router = APIRouter(tags=["workspaces"])


@router.get("/whoami", response_model=WhoAmIOut)
def whoami(principal: Viewer) -> WhoAmIOut:
    return WhoAmIOut(
        workspace=WorkspaceOut.model_validate(principal.workspace),
        token_id=principal.token.id,
        token_name=principal.token.name,
        role=principal.role,
    )


@router.get("/workspaces", response_model=list[WorkspaceOut])
async def workspaces_list(principal: Viewer, state: State) -> list[WorkspaceOut]:
    if principal.workspace.name == DEFAULT_WORKSPACE and principal.role is Role.ADMIN:
        items = await run_in_threadpool(state.store.workspaces.list)
        return [WorkspaceOut.model_validate(w) for w in items]
    return [WorkspaceOut.model_validate(principal.workspace)]


@router.post("/workspaces", response_model=WorkspaceCreated, status_code=201)
def workspaces_create(body: WorkspaceCreate, principal: Admin, state: State) -> WorkspaceCreated:
    return create_workspace(state, principal, body.name)


@router.get("/workspace/signing-key", response_model=SigningKeyOut)
def workspace_signing_key(principal: Viewer, state: State) -> SigningKeyOut:
    """The public half of the workspace's Ed25519 key that signs its edge bundles (docs/edge.md);
    made on first use. The private key never leaves the server."""
    return SigningKeyOut(**signing_public_key(state, principal.workspace.id))
