"""Tokens and workspaces: minting a workspace's token (its secret shown once), revoking one, and
making a workspace with its first admin token. The API's routes and the console's admin pages call
these; the store keeps only each secret's hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aicloud.auth import Principal, mint_token
from aicloud.entities import Role
from aicloud.errors import PermissionDeniedError
from aicloud.schemas import TokenCreate, TokenCreated, TokenOut, WorkspaceCreated, WorkspaceOut
from aicloud.server.bootstrap import DEFAULT_WORKSPACE
from aicloud.server.services.names import check_id
from aicloud.server.state import AppState

__all__ = ["create_token", "create_workspace", "require_server_admin", "revoke_token"]


def create_token(state: AppState, workspace_id: str, body: TokenCreate) -> TokenCreated:
    """A new token of the workspace; ConflictError when the name is taken there (a unique constraint
    in the database, so of concurrent creates with one name exactly one succeeds)."""
    expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token_id, token, secret_hash = mint_token()
    row = state.store.tokens.create(
        token_id=token_id,
        workspace_id=workspace_id,
        name=body.name,
        role=body.role,
        secret_hash=secret_hash,
        expires_at=expires,
        scope=body.scope,
    )
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)


def revoke_token(state: AppState, workspace_id: str, token_id: str) -> None:
    """Delete the token and forget it in the verified-token cache, so it fails at once."""
    state.store.tokens.delete(workspace_id, check_id(token_id, "token_id"))
    state.principals.forget_token(token_id)


def require_server_admin(principal: Principal) -> None:
    if principal.workspace.name != DEFAULT_WORKSPACE:
        raise PermissionDeniedError(
            f"this needs an admin token of the {DEFAULT_WORKSPACE!r} workspace",
            details={"needed": "server_admin"},
        )


def create_workspace(state: AppState, principal: Principal, name: str) -> WorkspaceCreated:
    """A new workspace and its first admin token (an admin of ``default`` only)."""
    require_server_admin(principal)
    ws = state.store.workspaces.create(name)
    token_id, token, secret_hash = mint_token()
    row = state.store.tokens.create(
        token_id=token_id, workspace_id=ws.id, name="admin", role=Role.ADMIN, secret_hash=secret_hash
    )
    created = TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)
    return WorkspaceCreated(workspace=WorkspaceOut.model_validate(ws), admin_token=created)
