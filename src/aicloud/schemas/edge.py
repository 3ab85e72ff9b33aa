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
    #: The node's last call (a pull, its assignments, its status: a heartbeat).
    last_seen_at: datetime | None = None
    #: ``online`` while its last heartbeat is younger than ``AICLOUD_EDGE_OFFLINE_AFTER_S``.
    status: Literal["online", "offline"] = "offline"
    #: Where the gateway reaches its replicas (``http://host``, from its status); None: not reachable.
    address: str | None = None
    #: Requests and errors its replicas served, as it reported them (since it joined).
    requests: int = 0
    errors: int = 0


class EdgeNodeJoined(BaseModel):
    """The node, its own token (shown once) and the key its bundles are signed with (to pin)."""

    node: EdgeNodeOut
    token: str
    signing_key: SigningKeyOut


class EdgePullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300, description="NAME, NAME:VERSION or NAME@ALIAS")


# --- the node agent's contract (docs/edge.md#the-node-agent): assignments down, status up


class EdgeAssignment(BaseModel):
    """One replica placed on a node: which version it serves (``bundle``: what the node pulls) and how."""

    replica_id: str
    deployment: str
    deployment_id: str
    model: str
    version: int
    version_id: str
    bundle: str  # "<model>:<version>", the ref the node pulls
    serve_key: str = Field(repr=False)  # the replica's key: every request but health carries it
    max_batch_size: int = Field(default=8, ge=1)
    max_wait_ms: float = Field(default=0.0, ge=0)
    threads: int = Field(default=1, ge=1)


class EdgeAssignments(BaseModel):
    """``GET /edge/nodes/{id}/assignments``: what the node should serve now (``etag`` names it)."""

    etag: str
    heartbeat_s: int = Field(ge=1)
    assignments: list[EdgeAssignment] = Field(default_factory=list)


class EdgeReplicaStatus(BaseModel):
    """One assignment as the node sees it; the counts are deltas since the previous accepted report."""

    model_config = ConfigDict(extra="forbid")

    replica_id: str = Field(min_length=1, max_length=200)
    state: Literal["starting", "ready", "failed"]
    port: int | None = Field(default=None, ge=1, le=65535)
    message: str = Field(default="", max_length=2000)
    requests: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    latency_s_sum: float = Field(default=0.0, ge=0)


class EdgeNodeStatus(BaseModel):
    """``PUT /edge/nodes/{id}/status``: the node's address (None: behind NAT) and its assignments."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(default=None, max_length=300, pattern=r"^https?://[^\s/]+$")
    assignments: list[EdgeReplicaStatus] = Field(default_factory=list, max_length=1000)


class EdgeStatusAck(BaseModel):
    etag: str
