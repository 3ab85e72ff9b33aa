"""Secrets: values sealed with the master key, bound to their workspace and name, never logged."""

from __future__ import annotations

from aicloud.entities import Secret
from aicloud.server.state import AppState

#: names the server keeps for itself in the secrets table (the bundle-signing key, services/bundles.py):
#: never a user's secret name (``[A-Za-z][A-Za-z0-9_]*``), left out of the list, not deletable by the API
RESERVED_PREFIX = "aicloud."


def is_reserved_secret(name: str) -> bool:
    return name.startswith(RESERVED_PREFIX)


def secret_aad(workspace_id: str, name: str) -> bytes:
    """Binds a sealed value to its workspace and name, so a copied ciphertext will not open elsewhere."""
    return f"secret:{workspace_id}:{name}".encode()


def create_secret(state: AppState, workspace_id: str, name: str, value: str) -> Secret:
    """Seal ``value`` and store it as secret ``name`` of the workspace."""
    sealed = state.blobs.seal(value.encode(), secret_aad(workspace_id, name))
    return state.store.secrets.create(workspace_id, name, sealed)


def open_secret(state: AppState, workspace_id: str, name: str) -> str:
    """The value of secret ``name`` (for a job's environment; never returned by the API)."""
    sealed = state.store.secrets.get(workspace_id, name).ciphertext
    return state.blobs.unseal(sealed, secret_aad(workspace_id, name)).decode()
