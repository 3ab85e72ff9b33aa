"""Wire models of deployments."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aicloud.entities.serving import DeploymentStatus, ReplicaState
from aicloud.schemas.api import ResourceLimits, SecretName
from aicloud.schemas.edge import LabelKey, LabelValue
from aicloud.schemas.runtime_env import RuntimeEnv
from aicloud.schemas.training import check_env_names

_MEMORY_RE = re.compile(r"^\s*([0-9]+)\s*(Mi|M|Gi|G)?\s*\Z")


def memory_mb(value: int | str) -> int:
    """A deployment's ``memory`` in MiB: a number of MiB, or ``"512Mi"``, ``"2Gi"`` (``M``, ``G`` alike)."""
    if isinstance(value, int):
        return value
    match = _MEMORY_RE.match(value)
    if match is None:
        raise ValueError(f"memory {value!r}: give MiB as a number, or a size such as '512Mi' or '2Gi'")
    return int(match[1]) * (1024 if (match[2] or "M").startswith("G") else 1)


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


#: The most versions one deployment serves at once (a canary's traffic).
MAX_TRAFFIC_VERSIONS = 8


def check_traffic(value: Any) -> dict[str, int] | None:
    """``traffic`` as ``{"3": 90, "4": 10}``: version numbers (YAML's ``3:`` keys too) to
    non-negative whole weights with a positive total."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError('give traffic as version numbers to weights, e.g. {"3": 90, "4": 10}')
    out: dict[str, int] = {}
    for key, weight in value.items():
        number = str(key).strip().lstrip("v")
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"traffic key {key!r} is not a version number (1, 2, ...)")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 1000:
            raise ValueError(f"traffic weight of version {number} must be a whole number from 0 to 1000")
        out[str(int(number))] = weight
    if not out or sum(out.values()) <= 0:
        raise ValueError("traffic needs at least one version with a weight above 0")
    if len(out) > MAX_TRAFFIC_VERSIONS:
        raise ValueError(f"traffic names {len(out)} versions; at most {MAX_TRAFFIC_VERSIONS}")
    return out


class Placement(BaseModel):
    """Where a deployment's replicas run instead of this machine (docs/edge.md, "Placement"):
    ``edge`` is a label selector over the workspace's edge nodes (every label must match; ``{}``:
    every node); one replica per matching node, at most ``replicas`` nodes (None: all of them)."""

    model_config = ConfigDict(extra="forbid")

    edge: dict[LabelKey, LabelValue] = Field(max_length=32)
    replicas: int | None = Field(default=None, ge=1, le=1024, description="at most this many nodes")


#: A deployment's ``runtime`` (docs/serving.md, "Runtimes").
Runtime = Literal["auto", "torch", "onnxruntime", "numpy"]


class DeploymentSpec(ScalingSpec):
    """What ``POST /deployments`` (``client.deployments.create``, a ``deploy.yaml``) takes; an
    unknown field is refused (422 naming it)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        description="name, name:version or name@alias; with service too, the service's self.model",
    )
    track_alias: bool = Field(
        default=True, description="With model name@alias: roll to the version the alias names when it moves."
    )
    service: ServiceRef | None = None
    traffic: dict[str, int] | None = Field(
        default=None,
        description=(
            "Canary: versions of the model and their relative weights, e.g. {'3': 90, '4': 10}; each "
            "version gets replicas of its own and its share of the requests. It must name the version "
            "`model` names. `aicloud deploy promote`/`rollback` end it."
        ),
    )
    startup_timeout_s: float = Field(
        default=600,
        gt=0,
        le=86_400,
        description="A replica not ready this long after its launch is killed and fails the deployment.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of each replica (not AICLOUD_*)."
    )
    secrets: list[SecretName] = Field(
        default_factory=list, description="Secrets injected into each replica as environment variables."
    )
    gpus: int = Field(
        default=0, ge=0, le=16, description="GPUs of each replica (its own CUDA_VISIBLE_DEVICES); 0: none."
    )
    memory: int | str | None = Field(
        default=None,
        description="Memory of each replica, MiB or '512Mi'/'2Gi': sets the sandbox's limits.memory_mb.",
    )
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=5, ge=0, le=10_000)
    max_queue: int = Field(default=1024, ge=1)
    timeout_s: float = Field(default=60, gt=0)
    cache_bytes: int = Field(default=0, ge=0)
    cpus: int = Field(default=1, ge=1)
    limits: ResourceLimits = Field(default_factory=ResourceLimits, description="Sandbox limits per replica.")
    runtime_env: RuntimeEnv | None = Field(
        default=None,
        description="Extra packages installed for each replica before it starts (docs/runtime-envs.md); "
        "such a replica starts cold, never forked from a warm template.",
    )
    batch_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "batches a replica runs at once; its cpus are split among them as intra-op threads "
            "(cpus // batch_workers each). 1: lowest latency; cpus: most throughput on CPU"
        ),
    )
    runtime: Runtime | None = Field(
        default=None,
        description=(
            "What runs the model (with a service too: its self.model): torch, onnxruntime, numpy "
            "(the built-in MLP), or auto: the fastest whose outputs match the version's own within "
            "1e-4, measured when each replica starts. Unset: the version's own runtime (the built-in "
            "MLP in numpy), nothing measured."
        ),
    )
    placement: Placement | None = Field(
        default=None,
        description=(
            "Run the replicas on edge nodes: {'edge': {'site': 'shop1'}} places one replica on each "
            "node whose labels match (all of them), serving the version's signed bundle; None: here."
        ),
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env_names(value)

    @field_validator("traffic", mode="before")
    @classmethod
    def _traffic(cls, value: Any) -> dict[str, int] | None:
        return check_traffic(value)

    @model_validator(mode="after")
    def _memory_limit(self) -> DeploymentSpec:
        if self.memory is None:
            return self
        mb = memory_mb(self.memory)
        if self.limits.memory_mb is not None and self.limits.memory_mb != mb:
            raise ValueError(
                f"memory ({self.memory}) and limits.memory_mb ({self.limits.memory_mb}) disagree; give one"
            )
        self.limits = ResourceLimits.model_validate({**self.limits.model_dump(), "memory_mb": mb})
        return self

    @model_validator(mode="after")
    def _one_source(self) -> DeploymentSpec:
        if self.model is None and self.service is None:
            raise ValueError(
                "give model (a registered model), service (your own code), or both (the service "
                "gets the model as self.model)"
            )
        if self.traffic is not None and (self.model is None or self.service is not None):
            raise ValueError("traffic splits requests between versions of a model; not with a service")
        if self.runtime is not None and self.model is None:
            raise ValueError(
                "runtime chooses what runs a registered model; a service runs its own code unless "
                "it has one (give model: NAME@ALIAS too, and the service gets it as self.model)"
            )
        if self.placement is not None and (self.service is not None or self.model is None):
            raise ValueError(
                "placement on edge nodes serves a registered model version's signed bundle; "
                "a service's code cannot be bundled"
            )
        if self.placement is not None and self.traffic is not None:
            raise ValueError("canary traffic is not supported on edge nodes; give placement or traffic")
        if self.placement is not None and self.runtime_env is not None:
            raise ValueError(
                "runtime_env is not supported on edge nodes (their agent runs the bundle with its own "
                "packages); give placement or runtime_env"
            )
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
    """Fields to change; anything left out keeps its value (validated with the rest as
    :class:`DeploymentSpec`). Changing the model or a replica setting (batching, ``env``,
    ``secrets``, ``gpus``, ``memory``...) rolls replicas over; changing only scaling
    (``ScalingSpec``'s fields), ``traffic`` or ``startup_timeout_s`` keeps the running ones."""

    model_config = ConfigDict(extra="forbid")  # a typo'd field is a 422 naming it

    model: str | None = None
    track_alias: bool | None = None
    traffic: dict[str, int] | None = None
    min_replicas: int | None = Field(default=None, ge=0, le=64)
    max_replicas: int | None = Field(default=None, ge=1, le=64)
    target_inflight: float | None = Field(default=None, gt=0)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    upscale_delay_s: float | None = Field(default=None, ge=0)
    downscale_delay_s: float | None = Field(default=None, ge=0)
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_wait_ms: float | None = Field(default=None, ge=0, le=10_000)
    max_queue: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    startup_timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    cache_bytes: int | None = Field(default=None, ge=0)
    cpus: int | None = Field(default=None, ge=1)
    batch_workers: int | None = Field(default=None, ge=1, le=64)
    runtime: Runtime | None = None
    env: dict[str, str] | None = None
    secrets: list[SecretName] | None = None
    gpus: int | None = Field(default=None, ge=0, le=16)
    memory: int | str | None = None
    placement: Placement | None = None

    @field_validator("traffic", mode="before")
    @classmethod
    def _traffic(cls, value: Any) -> dict[str, int] | None:
        return check_traffic(value)


class PromoteRequest(BaseModel):
    """``POST /deployments/{name}/promote``: serve one of the canary's versions alone."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(
        default=None, ge=1, description="the version to keep (default: the canary, the other version)"
    )


class TrafficOut(BaseModel):
    """One version a deployment serves: its weight and share, replicas, and the gateway's
    statistics of its calls since the control plane started (``window``: the last 60 s)."""

    version: int | None = None
    model_version_id: str | None = None
    weight: int
    percent: float
    replicas: int
    ready: int
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    window: dict[str, Any] = Field(default_factory=dict)
    #: Placed on edge nodes: ``requests``, ``errors``, ``mean_ms`` as the nodes reported them (all
    #: they served, the gateway's calls included), since the control plane started.
    edge: dict[str, Any] = Field(default_factory=dict)


class MinuteOut(BaseModel):
    """One minute of a deployment's history, all versions together."""

    t: int = Field(description="the minute's start, Unix seconds")
    requests: int
    errors: int
    rate_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    ready: int = Field(description="the most ready replicas the controller saw that minute")


class DeploymentMetricsOut(BaseModel):
    """``GET /deployments/{name}/metrics``: per served version (and any version still answering),
    and the last hour minute by minute (``history``, since the control plane started)."""

    deployment: str
    versions: list[TrafficOut]
    history: list[MinuteOut] = Field(default_factory=list)


class ReplicaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    generation: int
    state: ReplicaState
    created_at: datetime
    ready_at: datetime | None = None
    #: The number of the model version it serves (None: a Service, or a version deleted since).
    version: int | None = None
    #: The runtime serving the model and why (``auto``: the p50s measured at start), from the
    #: replica's log once it is ready; None for a Service or a replica not ready yet.
    runtime: str | None = None
    #: An edge replica's node (docs/edge.md): its id and name; None: a replica of this machine.
    node_id: str | None = None
    node: str | None = None


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
    #: The version number ``model_version_id`` is: what ``name@alias`` serves now (``→ v2``).
    model_version: int | None = None
    #: With canary traffic: the version numbers served and their weights (``{"3": 90, "4": 10}``).
    traffic: dict[str, int] | None = None
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    replicas: list[ReplicaOut] = Field(default_factory=list)
    url: str = ""


class EndpointTokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
