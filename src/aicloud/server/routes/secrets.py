"""Secrets: values sealed with the master key, never returned after creation, never logged."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aicloud.errors import NotFoundError
from aicloud.schemas import SecretCreate, SecretOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services.names import check_name
from aicloud.server.services.secrets import create_secret, is_reserved_secret

router = APIRouter(tags=["secrets"])


@router.post("/secrets", response_model=SecretOut, status_code=201)
def secrets_create(body: SecretCreate, principal: Member, state: State) -> SecretOut:
    return SecretOut.model_validate(create_secret(state, principal.workspace.id, body.name, body.value))


@router.get("/secrets", response_model=list[SecretOut])
def secrets_list(principal: Viewer, state: State) -> list[SecretOut]:
    items = state.store.secrets.list(principal.workspace.id)
    return [SecretOut.model_validate(s) for s in items if not is_reserved_secret(s.name)]


@router.delete("/secrets/{name}", status_code=204)
def secrets_delete(name: str, principal: Member, state: State) -> Response:
    if is_reserved_secret(name):  # the bundle-signing key: not a user's secret
        raise NotFoundError.of("secret", name)
    state.store.secrets.delete(principal.workspace.id, check_name(name))
    return Response(status_code=204)
