"""Secrets: values sealed with the master key, never returned after creation, never logged."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aicloud.schemas import SecretCreate, SecretOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._common import check_name

router = APIRouter(tags=["secrets"])


def secret_aad(workspace_id: str, name: str) -> bytes:
    """Binds a sealed value to its workspace and name, so a copied ciphertext will not open elsewhere."""
    return f"secret:{workspace_id}:{name}".encode()


@router.post("/secrets", response_model=SecretOut, status_code=201)
def secrets_create(body: SecretCreate, principal: Member, state: State) -> SecretOut:
    sealed = state.blobs.seal(body.value.encode(), secret_aad(principal.workspace.id, body.name))
    return SecretOut.model_validate(state.store.secrets.create(principal.workspace.id, body.name, sealed))


@router.get("/secrets", response_model=list[SecretOut])
def secrets_list(principal: Viewer, state: State) -> list[SecretOut]:
    return [SecretOut.model_validate(s) for s in state.store.secrets.list(principal.workspace.id)]


@router.delete("/secrets/{name}", status_code=204)
def secrets_delete(name: str, principal: Member, state: State) -> Response:
    state.store.secrets.delete(principal.workspace.id, check_name(name))
    return Response(status_code=204)
