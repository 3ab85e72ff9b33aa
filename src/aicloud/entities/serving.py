"""Entities of serving: deployments (desired state) and their replicas (actual state)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class DeploymentStatus(enum.StrEnum):
    PENDING = "pending"  # created, no replica ready yet
    READY = "ready"  # at least one replica of the current generation serves
    SCALED_TO_ZERO = "scaled_to_zero"  # idle; the next request starts a replica
    FAILED = "failed"  # replicas keep failing to start; ``message`` says why
    DELETING = "deleting"


class ReplicaState(enum.StrEnum):
    STARTING = "starting"  # process launched, loading and warming up
    READY = "ready"  # answers /v2/health/ready; takes traffic
    DRAINING = "draining"  # takes no new requests, finishes those in flight, then exits
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Deployment:
    """Desired serving state. ``spec`` holds what the user asked for:

    ``model`` (a ref such as ``digits@production``) or ``service`` (``{"code": digest,
    "entrypoint": "file.py:ClassName"}``), ``min_replicas``, ``max_replicas``,
    ``target_inflight``, ``max_batch_size``, ``max_wait_ms``, ``idle_timeout_s``,
    ``max_queue``, ``timeout_s``, ``cache_bytes``, ``cpus``.
    ``generation`` grows on every spec change but scaling and traffic; replicas of an older
    generation are rolled over.

    ``traffic`` (canary) maps model version ids to relative weights: each version gets replicas
    of its own and its share of the requests. None: ``model_version_id`` takes everything.
    """

    id: str
    workspace_id: str
    name: str
    spec: dict[str, Any]
    status: DeploymentStatus
    generation: int
    desired_replicas: int
    created_at: datetime
    updated_at: datetime
    model_version_id: str | None = None
    message: str | None = None
    traffic: dict[str, int] | None = None

    def versions(self) -> dict[str | None, int]:
        """The model versions to serve and their weights: ``traffic`` without its zero weights, or
        the one version (``None`` for a Service) with weight 1."""
        if self.traffic:
            served: dict[str | None, int] = {v: w for v, w in self.traffic.items() if w > 0}
            if served:
                return served
        return {self.model_version_id: 1}


@dataclass(frozen=True)
class Replica:
    id: str
    deployment_id: str
    generation: int
    state: ReplicaState
    port: int
    created_at: datetime
    handle: dict[str, Any] = field(default_factory=dict)
    ready_at: datetime | None = None
    message: str | None = None
    #: The replica's key (the bearer the gateway presents to it), sealed with the master key
    #: (bound to the replica's id) so that a restarted control plane can adopt the replica;
    #: None for a replica started before keys were stored.
    key_sealed: bytes | None = field(default=None, repr=False)
    #: The model version this replica serves (None: a Service).
    model_version_id: str | None = None
    #: The edge node it is placed on (docs/edge.md): the node runs it, not an executor (``handle``
    #: is empty, ``port`` is the node's report, 0 until then). None: a replica of this machine.
    node_id: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
