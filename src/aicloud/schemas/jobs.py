"""Wire models of jobs, runs, metrics, blobs and the model registry."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aicloud.entities import JobKind, JobStatus, RunStatus
from aicloud.schemas.api import JSONObject

MAX_INT = 2**31 - 1
"""The largest value of an INTEGER column (versions): bigger ones are a 422, not a database error."""
MAX_BIGINT = 2**63 - 1
"""The largest value of a BIGINT column (metric steps)."""
MAX_TIMESTAMP = 253402300799.0
"""The last second of year 9999 (Unix time): later ones do not convert to a datetime."""


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobCreate(BaseModel):
    """``POST /jobs``: unknown fields are refused (a 422 naming them), here and in each kind's spec."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    name: str | None = Field(default=None, max_length=100)
    priority: int = Field(default=0, ge=-100, le=100)
    spec: JSONObject


class JobOut(_Out):
    id: str
    name: str
    kind: JobKind
    spec: dict[str, Any]
    status: JobStatus
    priority: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    reason: str | None = None
    message: str | None = None
    run_id: str | None = None
    model_version_id: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)
    created_by: str | None = None
    parent_id: str | None = None
    attempt: int = 0
    checkpoint: dict[str, Any] = Field(default_factory=dict)


class RunCreate(BaseModel):
    name: str = Field(default="run", max_length=200)
    job_id: str | None = None
    params: JSONObject = Field(default_factory=dict)


class RunOut(_Out):
    id: str
    job_id: str | None
    name: str
    status: RunStatus
    params: dict[str, Any]
    summary: dict[str, float] = Field(default_factory=dict)
    created_at: datetime
    finished_at: datetime | None = None
    experiment: str | None = None  # its experiment's name (docs/mlflow.md); None: in none
    tags: dict[str, str] = Field(default_factory=dict)  # MLflow's run tags


_HIGHER = ("accuracy", "acc", "r2", "f1", "auc", "precision", "recall", "per_second", "throughput")
_LOWER = ("loss", "error", "rmse", "mae", "mse", "seconds", "latency", "perplexity")


def metric_goal(name: str) -> Literal["max", "min"] | None:
    """Whether higher (``max``) or lower (``min``) is better for a metric, judged by the words
    of its name (``eval_accuracy``: max, ``train_loss``: min), or None when the name says
    neither (``epoch``)."""
    text = "_" + "_".join(re.split(r"[^a-z0-9]+", name.lower())) + "_"
    if any(f"_{word}_" in text for word in _HIGHER):
        return "max"
    if any(f"_{word}_" in text for word in _LOWER):
        return "min"
    return None


RunOrder = Literal["best", "asc", "desc"]
"""How ``GET /runs?metric=`` orders: best first (by ``metric_goal``; lowest first when the
name says neither), ascending or descending."""


class ParamsIn(BaseModel):
    params: JSONObject


class MetricPointIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    step: int = Field(default=0, ge=0, le=MAX_BIGINT)
    value: float = Field(allow_inf_nan=False)
    timestamp: float | None = Field(default=None, ge=0, le=MAX_TIMESTAMP)


class MetricsIn(BaseModel):
    points: list[MetricPointIn] = Field(max_length=10_000)


class MetricsCount(BaseModel):
    count: int


class MetricSeries(BaseModel):
    """One series, columnar; a value that was not finite is null."""

    steps: list[int]
    values: list[float | None]
    timestamps: list[float]


class MetricsOut(BaseModel):
    metrics: dict[str, MetricSeries]
    total: int | None = Field(
        default=None, description="with limit or offset: how many metrics the run has in all"
    )


class RunCompareOut(BaseModel):
    """``GET /runs/compare``: the runs in the order asked, the params whose values differ between
    them (or that some lack), and each run's series (run id → metric → series)."""

    runs: list[RunOut]
    params_differ: list[str]
    metrics: dict[str, dict[str, MetricSeries]]


class RunFinish(BaseModel):
    status: Literal["succeeded", "failed", "cancelled"]


class BlobOut(BaseModel):
    digest: str
    size: int


class ModelVersionCreate(BaseModel):
    files: dict[str, str] = Field(min_length=1)
    signature: JSONObject = Field(default_factory=dict)
    config: JSONObject = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    run_id: str | None = None
    job_id: str | None = None


class ModelVersionOut(_Out):
    id: str
    name: str
    version: int
    files: dict[str, str]
    signature: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, float]
    lineage: dict[str, Any]
    aliases: list[str] = Field(default_factory=list)
    created_at: datetime


class ModelOut(_Out):
    id: str
    name: str
    latest_version: int
    aliases: dict[str, int] = Field(default_factory=dict)
    created_at: datetime


class AliasSet(BaseModel):
    version: int = Field(ge=1, le=MAX_INT)
