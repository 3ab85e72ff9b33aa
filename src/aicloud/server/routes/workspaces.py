"""Workspaces (tenants). Creating one needs an admin token of the ``default`` workspace."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from aicloud.auth import Principal, mint_token
from aicloud.entities import Role
from aicloud.errors import PermissionDeniedError
from aicloud.schemas import TokenCreated, TokenOut, WhoAmIOut, WorkspaceCreate, WorkspaceCreated, WorkspaceOut
from aicloud.schemas.edge import SigningKeyOut
from aicloud.server.bootstrap import DEFAULT_WORKSPACE
from aicloud.server.deps import Admin, State, Viewer
from aicloud.server.services.bundles import signing_public_key

router = APIRouter(tags=["workspaces"])


def require_server_admin(principal: Principal) -> None:
    if principal.workspace.name != DEFAULT_WORKSPACE:
        raise PermissionDeniedError(
            f"this needs an admin token of the {DEFAULT_WORKSPACE!r} workspace",
            details={"needed": "server_admin"},
        )


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
    require_server_admin(principal)
    ws = state.store.workspaces.create(body.name)
    token_id, token, secret_hash = mint_token()
    row = state.store.tokens.create(
        token_id=token_id, workspace_id=ws.id, name="admin", role=Role.ADMIN, secret_hash=secret_hash
    )
    created = TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)
    return WorkspaceCreated(workspace=WorkspaceOut.model_validate(ws), admin_token=created)


@router.get("/workspace/signing-key", response_model=SigningKeyOut)
def workspace_signing_key(principal: Viewer, state: State) -> SigningKeyOut:
    """The public half of the workspace's Ed25519 key that signs its edge bundles (docs/edge.md);
    made on first use. The private key never leaves the server."""
    return SigningKeyOut(**signing_public_key(state, principal.workspace.id))
