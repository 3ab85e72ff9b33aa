"""Edge nodes (docs/edge.md): machines that joined a workspace to pull its signed bundles."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class EdgeNode:
    """A registered edge node. ``token_id`` is its own token (scope ``edge-node:<id>``), revoked with it."""

    id: str
    workspace_id: str
    name: str
    token_id: str
    created_at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    last_seen_at: datetime | None = None
    #: ``http://host`` where the gateway reaches its replicas (its last status report); None: none.
    address: str | None = None
    #: Requests and errors its replicas served, as it reported them (since it joined).
    requests: int = 0
    errors: int = 0
