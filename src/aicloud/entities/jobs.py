"""Entities of training: jobs, runs, metric points, models and model versions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobKind(enum.StrEnum):
    TRAIN = "train"  # a built-in task (aicloud.training.tasks)
    COMMAND = "command"  # user code: an uploaded file or folder and a command
    SWEEP = "sweep"  # a hyperparameter search: its trials are child jobs (``parent_id``)
    FINETUNE = "finetune"  # adapt a pretrained model version to a dataset (aicloud.training.finetune)
    KERAS = "keras"  # the Keras-style remote API (aicloud.Model): fit, evaluate or predict a Keras model
    EVALUATE = "evaluate"  # score a model version on a dataset version, metrics kept on the version
    BATCH_PREDICT = "batch_predict"  # a model version's predictions over a dataset, as a new dataset version


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Job:
    """A unit of work. ``spec`` is what the user asked for; the rest is status.

    ``handle`` is the executor's record of where the job runs (for the local executor:
    pid, process group, log path, process start time), persisted so a restarted control
    plane can re-attach. ``reason`` is a short machine word for failures (``error``,
    ``lost``, ``cancelled``, ``timeout``); ``message`` is for people (the last log lines
    of a crashed script).
    """

    id: str
    workspace_id: str
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
    handle: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    model_version_id: str | None = None
    log_digest: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    created_by: str | None = None  # the id of the token that submitted it
    parent_id: str | None = None  # the sweep a trial job belongs to
    attempt: int = 0  # restarts so far (``max_restarts``)
    checkpoint: dict[str, Any] = field(default_factory=dict)  # the latest: {"digest", "epoch", ...}


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Run:
    """One training attempt: params, metric series, system metrics, artifacts."""

    id: str
    workspace_id: str
    job_id: str | None
    name: str
    status: RunStatus
    params: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None = None
    summary: dict[str, float] = field(default_factory=dict)  # last value of each metric
    experiment: str | None = None  # the experiment's name (docs/mlflow.md); None: in none yet
    tags: dict[str, str] = field(default_factory=dict)  # MLflow's run tags
    deleted: bool = False  # deleted through MLflow's API (a soft delete: it can be restored)


@dataclass(frozen=True)
class MetricPoint:
    name: str
    step: int
    value: float
    timestamp: float  # unix seconds


@dataclass(frozen=True)
class Model:
    id: str
    workspace_id: str
    name: str
    created_at: datetime
    latest_version: int
    aliases: dict[str, int] = field(default_factory=dict)  # alias → version


@dataclass(frozen=True)
class ModelVersion:
    """A registered model: artifact files (blob digests), signature, metrics and lineage.

    ``files`` maps a file name (``model.safetensors``, ``config.json``) to a blob digest.
    ``lineage`` names what made it: ``{"job_id", "run_id", "datasets": [{"id", "name",
    "version"}], "code_digest"}``.
    """

    id: str
    workspace_id: str
    name: str
    version: int
    files: dict[str, str]
    signature: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, float]
    lineage: dict[str, Any]
    created_at: datetime
    aliases: list[str] = field(default_factory=list)
