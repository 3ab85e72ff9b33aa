"""Bearer tokens of the caller's workspace; admins only. The secret is returned once."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aicloud.schemas import TokenCreate, TokenCreated, TokenOut
from aicloud.server.deps import Admin, State
from aicloud.server.services.tokens import create_token, revoke_token

router = APIRouter(tags=["tokens"])


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def tokens_create(body: TokenCreate, principal: Admin, state: State) -> TokenCreated:
    """A new token; 409 ``conflict`` when the name is taken in the workspace (a unique constraint
    in the database, so of concurrent creates with one name exactly one succeeds)."""
    return create_token(state, principal.workspace.id, body)


@router.get("/tokens", response_model=list[TokenOut])
def tokens_list(principal: Admin, state: State) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in state.store.tokens.list(principal.workspace.id)]


@router.delete("/tokens/{token_id}", status_code=204)
def tokens_delete(token_id: str, principal: Admin, state: State) -> Response:
    revoke_token(state, principal.workspace.id, token_id)
    return Response(status_code=204)
