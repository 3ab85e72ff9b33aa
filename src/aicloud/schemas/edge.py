"""Bodies of the edge-bundle API (docs/edge.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class SigningKeyOut(BaseModel):
    """The public half of a workspace's bundle-signing key."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    public_key: str  # "ed25519:<base64 of 32 bytes>", what `aicloud bundle verify --key` reads
    pem: str


LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{0,63}$")]


class EdgeNodeJoin(BaseModel):
    """``aicloud edge join``: the node's name and labels (``site=shop1``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)


class EdgeNodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    labels: dict[str, str]
    token_id: str
    created_at: datetime
    last_seen_at: datetime | None = None


class EdgeNodeJoined(BaseModel):
    """The node, its own token (shown once) and the key its bundles are signed with (to pin)."""

    node: EdgeNodeOut
    token: str
    signing_key: SigningKeyOut


class EdgePullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300, description="NAME, NAME:VERSION or NAME@ALIAS")
