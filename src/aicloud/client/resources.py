"""Small resources of the SDK: secrets, tokens, workspaces, admin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aicloud.schemas import (
    RotateKeyOut,
    SecretOut,
    TokenCreated,
    TokenOut,
    WhoAmIOut,
    WorkspaceCreated,
    WorkspaceOut,
)
from aicloud.schemas.edge import SigningKeyOut

if TYPE_CHECKING:
    from aicloud.client.http import Transport


class SecretsAPI:
    """``client.secrets``: values go in once and never come back out."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, name: str, value: str) -> SecretOut:
        return SecretOut.model_validate(
            self._t.json("POST", "/api/v1/secrets", json={"name": name, "value": value})
        )

    def list(self) -> list[SecretOut]:
        return [SecretOut.model_validate(s) for s in self._t.json("GET", "/api/v1/secrets")]

    def delete(self, name: str) -> None:
        self._t.request("DELETE", f"/api/v1/secrets/{name}")


class TokensAPI:
    """``client.tokens`` (admin role)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(
        self, name: str, role: str = "member", expires_in_days: int | None = None, scope: str | None = None
    ) -> TokenCreated:
        """``scope="metrics"``: a scrape token, good only for Prometheus (docs/metrics.md)."""
        body: dict[str, Any] = {"name": name, "role": role, "expires_in_days": expires_in_days}
        if scope is not None:
            body["scope"] = scope
        return TokenCreated.model_validate(self._t.json("POST", "/api/v1/tokens", json=body))

    def list(self) -> list[TokenOut]:
        return [TokenOut.model_validate(t) for t in self._t.json("GET", "/api/v1/tokens")]

    def delete(self, token_id: str) -> None:
        self._t.request("DELETE", f"/api/v1/tokens/{token_id}")


class WorkspacesAPI:
    """``client.workspaces``: creating one needs an admin token of ``default``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, name: str) -> WorkspaceCreated:
        return WorkspaceCreated.model_validate(
            self._t.json("POST", "/api/v1/workspaces", json={"name": name})
        )

    def list(self) -> list[WorkspaceOut]:
        return [WorkspaceOut.model_validate(w) for w in self._t.json("GET", "/api/v1/workspaces")]

    def whoami(self) -> WhoAmIOut:
        return WhoAmIOut.model_validate(self._t.json("GET", "/api/v1/whoami"))

    def signing_key(self) -> SigningKeyOut:
        """The public key that signs this workspace's edge bundles (``aicloud bundle verify --key``)."""
        return SigningKeyOut.model_validate(self._t.json("GET", "/api/v1/workspace/signing-key"))


class AdminAPI:
    """``client.admin``: server-wide operations."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def rotate_key(self) -> RotateKeyOut:
        return RotateKeyOut.model_validate(self._t.json("POST", "/api/v1/admin/rotate-key"))
