"""Wire models of deployments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aicloud.entities.serving import DeploymentStatus, ReplicaState
from aicloud.schemas.api import ResourceLimits


class ServiceRef(BaseModel):
    code: str = Field(description="blob digest of a .tar.gz (or single file) with the service code")
    entrypoint: str = Field(pattern=r"^[\w./-]+\.py:[A-Za-z_]\w*$", description="file.py:ClassName")


class ScalingSpec(BaseModel):
    min_replicas: int = Field(default=1, ge=0, le=64)
    max_replicas: int = Field(default=1, ge=1, le=64)
    target_inflight: float = Field(default=8, gt=0)
    idle_timeout_s: float = Field(default=300, gt=0)
    upscale_delay_s: float = Field(default=0, ge=0)
    downscale_delay_s: float = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _min_le_max(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self


class DeploymentSpec(ScalingSpec):
    model: str | None = Field(default=None, description="name, name:version or name@alias")
    service: ServiceRef | None = None
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=5, ge=0, le=10_000)
    max_queue: int = Field(default=1024, ge=1)
    timeout_s: float = Field(default=60, gt=0)
    cache_bytes: int = Field(default=0, ge=0)
    cpus: int = Field(default=1, ge=1)
    limits: ResourceLimits = Field(default_factory=ResourceLimits, description="Sandbox limits per replica.")
    batch_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "batches a replica runs at once; its cpus are split among them as intra-op threads "
            "(cpus // batch_workers each). 1: lowest latency; cpus: most throughput on CPU"
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> DeploymentSpec:
        if (self.model is None) == (self.service is None):
            raise ValueError("give exactly one of model (a registered model) or service (your own code)")
        if self.batch_workers > self.cpus:
            raise ValueError(
                f"batch_workers ({self.batch_workers}) is above cpus ({self.cpus}): "
                "each batch worker needs at least one cpu"
            )
        return self


class DeploymentCreate(DeploymentSpec):
    model_config = ConfigDict(extra="forbid")  # a typo'd field is a 422 naming it

    name: str


class DeploymentPatch(BaseModel):
    """Fields to change; anything left out keeps its value. Changing the model (or batching) rolls
    replicas over; changing only scaling (``ScalingSpec``'s fields) keeps the running ones."""

    model_config = ConfigDict(extra="forbid")  # a typo'd field is a 422 naming it

    model: str | None = None
    min_replicas: int | None = Field(default=None, ge=0, le=64)
    max_replicas: int | None = Field(default=None, ge=1, le=64)
    target_inflight: float | None = Field(default=None, gt=0)
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_wait_ms: float | None = Field(default=None, ge=0, le=10_000)
    idle_timeout_s: float | None = Field(default=None, gt=0)


class ReplicaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    generation: int
    state: ReplicaState
    created_at: datetime
    ready_at: datetime | None = None


class ReplicaLogOut(BaseModel):
    """The end of one replica's log (its stdout and stderr: the Service's prints, its logging, the
    tracebacks of handlers that raised)."""

    replica: str
    state: ReplicaState
    generation: int
    log: str
    #: The byte offset in the replica's log just past ``log``: ask for ``offset=end`` to follow it.
    end: int


class DeploymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    spec: dict[str, Any]
    status: DeploymentStatus
    generation: int
    desired_replicas: int
    model_version_id: str | None = None
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    replicas: list[ReplicaOut] = Field(default_factory=list)
    url: str = ""


class EndpointTokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
