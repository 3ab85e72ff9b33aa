"""Bodies of the edge-bundle API (docs/edge.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class SigningKeyOut(BaseModel):
    """The public half of a workspace's bundle-signing key."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    public_key: str  # "ed25519:<base64 of 32 bytes>", what `aicloud bundle verify --key` reads
    pem: str
