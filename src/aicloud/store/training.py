"""Store interfaces for jobs, runs (with metric series), the model registry and blob ownership.

Same rules as ``store.base``: entities out, one transaction per method, NotFoundError for
missing objects and for objects of another workspace (indistinguishable).
"""

from __future__ import annotations

import abc
import builtins
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aicloud.entities import (
    BlobOwner,
    Job,
    JobKind,
    JobStatus,
    MetricPoint,
    Model,
    ModelVersion,
    Run,
    RunStatus,
)
from aicloud.entities.series import MetricArrays, MetricStats


class JobStore(abc.ABC):
    @abc.abstractmethod
    def create(
        self,
        *,
        workspace_id: str,
        name: str,
        kind: JobKind,
        spec: dict[str, Any],
        priority: int = 0,
        created_by: str | None = None,
        parent_id: str | None = None,
    ) -> Job:
        """A new ``pending`` job. ``name`` need not be unique.

        ``created_by`` is the submitting token's id (usage by user); ``parent_id`` the sweep
        job a trial belongs to.
        """

    @abc.abstractmethod
    def get(self, workspace_id: str, job_id: str) -> Job: ...

    @abc.abstractmethod
    def get_any(self, job_id: str) -> Job:
        """By id across workspaces (controllers)."""

    @abc.abstractmethod
    def list(
        self,
        workspace_id: str,
        *,
        status: JobStatus | None = None,
        limit: int = 100,
        parent_id: str | None = None,
        kind: JobKind | None = None,
        offset: int = 0,
    ) -> builtins.list[Job]:
        """Newest first (ties by id, so pages are stable): ``limit`` jobs after ``offset``;
        ``parent_id`` keeps only the trials of that sweep, ``kind`` only jobs of that kind."""

    @abc.abstractmethod
    def count(
        self,
        workspace_id: str,
        *,
        status: JobStatus | None = None,
        parent_id: str | None = None,
        kind: JobKind | None = None,
    ) -> int:
        """How many jobs ``list`` would return without a limit."""

    @abc.abstractmethod
    def finished_between(
        self, workspace_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[Job]:
        """The workspace's ended jobs with ``since <= finished_at < until`` (None = unbounded),
        oldest end first (usage reports)."""

    @abc.abstractmethod
    def in_states(
        self, states: builtins.list[JobStatus], *, kinds: builtins.list[JobKind] | None = None
    ) -> builtins.list[Job]:
        """Every job in these states in every workspace, in queue order: priority desc, then created asc.

        ``kinds`` keeps only jobs of those kinds (None: every kind).
        """

    @abc.abstractmethod
    def transition(
        self,
        job_id: str,
        *,
        expect: builtins.list[JobStatus],
        status: JobStatus,
        reason: str | None = None,
        message: str | None = None,
        handle: dict[str, Any] | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        log_digest: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> Job | None:
        """Compare-and-set: move the job to ``status`` only if it is in one of ``expect``.

        Returns the updated job, or None when it was not in an expected state (someone else
        moved it). Fields left None are not changed.
        """

    @abc.abstractmethod
    def update(
        self,
        job_id: str,
        *,
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
        model_version_id: str | None = None,
        message: str | None = None,
        usage: dict[str, Any] | None = None,
        log_digest: str | None = None,
        attempt: int | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> Job:
        """Set the given fields (None = unchanged) without touching status."""

    @abc.abstractmethod
    def request_cancel(self, workspace_id: str, job_id: str) -> Job:
        """Set ``cancel_requested``; a pending job becomes ``cancelled`` at once."""


MetricOp = Literal["<", "<=", ">", ">=", "=", "!="]


@dataclass(frozen=True)
class MetricCondition:
    """Keeps the runs whose last value of metric ``name`` compares to ``value`` by ``op`` (runs
    without the metric, or whose last value was not finite, never match)."""

    name: str
    op: MetricOp
    value: float


@dataclass(frozen=True)
class ParamCondition:
    """Keeps the runs whose param ``name`` equals one of ``values`` (JSON values: a filter's
    ``0.01`` matches the number and the text "0.01"), or with ``negate`` the runs that have the
    param with another value."""

    name: str
    values: tuple[Any, ...]
    negate: bool = False


@dataclass(frozen=True)
class RunFilter:
    """Which runs ``RunStore.list`` returns and in what order (every field optional).

    ``job`` is a job id or a job name; ``model`` keeps the runs of jobs that train that model
    (the spec's ``model_name``) or that registered a version of it; ``ids`` keeps the runs of
    those ids (the workspace's: another's are left out as missing ones are); ``name`` the runs whose
    name contains it (case-insensitive); ``metrics`` and ``params`` are conditions all runs must
    meet. ``metric`` orders by the last value of that metric, ``param`` by that param's value
    (ascending, or descending with ``descending``), runs without it (or whose last value was
    not finite) last, newest first among equals; without either, newest first (oldest first
    with ``oldest_first``). ``offset`` skips that many runs of the ordered result (pages).
    ``experiment`` keeps the runs of that experiment (``Default``: and the runs in none).
    """

    job: str | None = None
    model: str | None = None
    status: RunStatus | None = None
    ids: tuple[str, ...] | None = None
    name: str | None = None
    metrics: tuple[MetricCondition, ...] = ()
    params: tuple[ParamCondition, ...] = ()
    metric: str | None = None
    param: str | None = None
    descending: bool = False
    oldest_first: bool = False
    offset: int = 0
    experiment: str | None = None


class RunStore(abc.ABC):
    @abc.abstractmethod
    def create(
        self, *, workspace_id: str, job_id: str | None, name: str, params: dict[str, Any] | None = None
    ) -> Run: ...

    @abc.abstractmethod
    def get(self, workspace_id: str, run_id: str) -> Run: ...

    @abc.abstractmethod
    def list(
        self,
        workspace_id: str,
        *,
        job_id: str | None = None,
        limit: int = 100,
        where: RunFilter | None = None,
        metrics: Collection[str] | None = None,
    ) -> builtins.list[Run]:
        """Newest first, or as ``where`` orders them; ``where`` filters in the query.

        ``metrics`` names the metrics whose last values fill each run's ``summary`` (None: all
        of them), so a page of a runs table reads the columns it shows and no others.
        """

    @abc.abstractmethod
    def count(self, workspace_id: str, *, job_id: str | None = None, where: RunFilter | None = None) -> int:
        """How many runs ``list`` would return without a limit (``where.offset`` ignored)."""

    @abc.abstractmethod
    def log_params(self, workspace_id: str, run_id: str, params: dict[str, Any]) -> Run:
        """Merge ``params`` into the run's params."""

    @abc.abstractmethod
    def log_metrics(self, workspace_id: str, run_id: str, points: builtins.list[MetricPoint]) -> int:
        """Append a batch of points in one transaction (and update the run's summary); returns count."""

    def log_metric_arrays(self, workspace_id: str, run_id: str, series: Mapping[str, MetricArrays]) -> int:
        """``log_metrics`` of columns: each metric's points as arrays (the bulk path)."""
        points = [
            MetricPoint(name, int(step), float(value), float(timestamp))
            for name, arrays in series.items()
            for step, value, timestamp in zip(arrays.steps, arrays.values, arrays.timestamps, strict=True)
        ]
        return self.log_metrics(workspace_id, run_id, points)

    @abc.abstractmethod
    def metric_history(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> builtins.list[MetricPoint]:
        """Ordered by name, step, timestamp. 100k points must come back in well under 300 ms."""

    @abc.abstractmethod
    def metric_columns(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> dict[str, dict[str, builtins.list[Any]]]:
        """The same points as ``metric_history``, columnar, as the API returns them.

        ``{name: {"steps": [...], "values": [...], "timestamps": [...]}}``, names sorted, each
        series ordered by step then timestamp; ``{}`` when the run has no such metric. A value
        that was not finite (NaN, infinity) is None here (JSON null) and NaN in ``metric_history``.
        """

    def metric_arrays(
        self, workspace_id: str, run_id: str, names: Collection[str] | None = None
    ) -> dict[str, MetricArrays]:
        """The series of ``names`` (None: every metric) as arrays, names sorted, each in series
        order; a name the run does not have is left out."""
        wanted = None if names is None else set(names)
        return {
            name: MetricArrays.of(
                c["steps"], [math.nan if v is None else v for v in c["values"]], c["timestamps"]
            )
            for name, c in self.metric_columns(workspace_id, run_id).items()
            if wanted is None or name in wanted
        }

    def metric_arrays_of(
        self, workspace_id: str, run_ids: Sequence[str], names: Collection[str] | None = None
    ) -> dict[str, dict[str, MetricArrays]]:
        """``metric_arrays`` of several runs at once (run id → name → series); raises NotFoundError
        for the first run that is missing or of another workspace."""
        return {run_id: self.metric_arrays(workspace_id, run_id, names) for run_id in run_ids}

    @abc.abstractmethod
    def metric_stats(
        self, workspace_id: str, run_id: str, names: Collection[str] | None = None
    ) -> builtins.list[MetricStats]:
        """One entry per metric of the run (of ``names``, None: all), sorted by name."""

    @abc.abstractmethod
    def finish(self, workspace_id: str, run_id: str, status: RunStatus) -> Run: ...


class ModelStore(abc.ABC):
    @abc.abstractmethod
    def create_version(
        self,
        *,
        workspace_id: str,
        name: str,
        files: dict[str, str],
        signature: dict[str, Any],
        config: dict[str, Any],
        metrics: dict[str, float],
        lineage: dict[str, Any],
    ) -> ModelVersion:
        """Create the model on first use and append the next version atomically (as datasets do)."""

    @abc.abstractmethod
    def get_version(self, workspace_id: str, name: str, version: int | None = None) -> ModelVersion:
        """A version by number, or the latest when None. Raises NotFoundError."""

    @abc.abstractmethod
    def get_version_by_alias(self, workspace_id: str, name: str, alias: str) -> ModelVersion: ...

    @abc.abstractmethod
    def merge_metrics(self, workspace_id: str, version_id: str, metrics: dict[str, float]) -> ModelVersion:
        """Add ``metrics`` to the version's (a key already there is replaced), atomically: evaluations
        (docs/evaluation.md). Raises NotFoundError for a version not of this workspace."""

    @abc.abstractmethod
    def get_version_by_id(self, workspace_id: str, version_id: str) -> ModelVersion: ...

    @abc.abstractmethod
    def list_models(
        self, workspace_id: str, *, offset: int = 0, limit: int | None = None
    ) -> builtins.list[Model]:
        """Newest first (by creation, ties by id): ``limit`` of them (None: all) after ``offset``."""

    @abc.abstractmethod
    def get_model(self, workspace_id: str, name: str) -> Model:
        """The model with its aliases and latest version number. Raises NotFoundError."""

    @abc.abstractmethod
    def count_models(self, workspace_id: str) -> int:
        """How many ``list_models`` would return without a limit."""

    @abc.abstractmethod
    def list_versions(
        self,
        workspace_id: str,
        name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> builtins.list[ModelVersion]:
        """Oldest first (newest first with ``newest_first``), ``limit`` of them (None: all) after
        ``offset``. Raises NotFoundError when the model does not exist."""

    @abc.abstractmethod
    def count_versions(self, workspace_id: str, name: str) -> int:
        """How many versions the model has. Raises NotFoundError when the model does not exist."""

    @abc.abstractmethod
    def set_alias(self, workspace_id: str, name: str, alias: str, version: int) -> ModelVersion:
        """Point ``alias`` at ``version`` atomically (moving it from any other version)."""

    @abc.abstractmethod
    def delete_alias(self, workspace_id: str, name: str, alias: str) -> None: ...


class BlobRefStore(abc.ABC):
    """References to stored blobs: one table for every kind of owner (``BlobOwner``).

    Blobs are content-addressed and shared between workspaces. A blob may be removed only when
    no reference of any kind, in any workspace, is left; a workspace may read or reference a
    blob only while it holds a reference to it. The stores that keep a digest (dataset and
    model versions, jobs, deployments) add and remove their references in the transaction that
    writes the owner; ``add`` here is for raw uploads (``POST /blobs``) and tests.
    """

    def held(self, workspace_id: str) -> list[tuple[str, datetime]]:
        """The digests the workspace holds, each with when it first referenced it (storage costs)."""
        return []

    @abc.abstractmethod
    def add(
        self, workspace_id: str, digest: str, owner: BlobOwner = BlobOwner.UPLOAD, owner_id: str = ""
    ) -> None:
        """Idempotent. Raises NotFoundError when the workspace does not exist."""

    @abc.abstractmethod
    def owns(self, workspace_id: str, digest: str) -> bool:
        """Whether the workspace holds any reference to the blob."""

    @abc.abstractmethod
    def in_use(self, digest: str) -> bool:
        """Whether any reference of any kind, in any workspace, holds the blob."""

    @abc.abstractmethod
    def release(self, workspace_id: str, owner: BlobOwner, owner_id: str) -> builtins.list[str]:
        """Remove the owner's references; in the same transaction, the digests they held that
        nothing references any more (sorted): the caller removes those blobs."""
