"""Bearer tokens of the caller's workspace; admins only. The secret is returned once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Response

from aicloud.auth import mint_token
from aicloud.schemas import TokenCreate, TokenCreated, TokenOut
from aicloud.server.deps import Admin, State
from aicloud.server.services.names import check_id

router = APIRouter(tags=["tokens"])


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def tokens_create(body: TokenCreate, principal: Admin, state: State) -> TokenCreated:
    """A new token; 409 ``conflict`` when the name is taken in the workspace (a unique constraint
    in the database, so of concurrent creates with one name exactly one succeeds)."""
    expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token_id, token, secret_hash = mint_token()
    row = state.store.tokens.create(
        token_id=token_id,
        workspace_id=principal.workspace.id,
        name=body.name,
        role=body.role,
        secret_hash=secret_hash,
        expires_at=expires,
    )
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)


@router.get("/tokens", response_model=list[TokenOut])
def tokens_list(principal: Admin, state: State) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in state.store.tokens.list(principal.workspace.id)]


@router.delete("/tokens/{token_id}", status_code=204)
def tokens_delete(token_id: str, principal: Admin, state: State) -> Response:
    state.store.tokens.delete(principal.workspace.id, check_id(token_id, "token_id"))
    state.principals.forget_token(token_id)
    return Response(status_code=204)
