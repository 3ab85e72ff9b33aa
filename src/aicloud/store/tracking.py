"""Store interface for experiment tracking (the MLflow tracking API, ``docs/mlflow.md``).

Experiments are named groups of runs; a run names its experiment (``Run.experiment``: None or
``Default`` for MLflow's Default experiment, which has no row). Run artifacts are files logged to a
run, each kept as a blob referenced as (``BlobOwner.RUN_ARTIFACT``, run id). The runs themselves,
their params and metric series are ``RunStore``'s; this store adds what MLflow needs on top.

Same rules as ``store.base``: entities out, one transaction per method, NotFoundError for missing
objects and for objects of another workspace (indistinguishable).
"""

from __future__ import annotations

import abc
import builtins
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aicloud.entities import Experiment, Run, RunArtifact

DEFAULT_EXPERIMENT = "Default"
"""The name of the experiment a run is in when it names none (MLflow's experiment ``0``)."""

ClauseKind = Literal["metric", "param", "tag", "attribute"]


def param_text(value: Any) -> str:
    """A run param as MLflow shows it: text as is, anything else (aicloud's own params are any
    JSON value) as JSON (``0.1``, ``32``, ``true``)."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class Clause:
    """One comparison of a run search: ``metrics.acc > 0.5`` is ("metric", "acc", ">", 0.5).

    ``op`` is one of ``= != < <= > >=`` (metrics and the time attributes), or ``= != LIKE ILIKE
    IN NOT IN`` (params, tags, text attributes); ``value`` is a float, a string or, for ``IN``, a
    tuple of strings. Attributes: ``status`` (aicloud's run status), ``run_name``, ``run_id``,
    ``start_time`` and ``end_time`` (unix milliseconds).
    """

    kind: ClauseKind
    key: str
    op: str
    value: float | str | tuple[str, ...]


@dataclass(frozen=True)
class OrderKey:
    """One ``order_by`` term: a metric's last value, a param, a tag, or an attribute
    (``start_time``, ``end_time``, ``run_name``, ``status``, ``run_id``). Runs without it last."""

    kind: ClauseKind
    key: str
    ascending: bool = True


@dataclass(frozen=True)
class RunQuery:
    """Which runs ``search_runs`` returns, in which order.

    ``experiments``: experiment names; the runs of any of them (``Default`` also takes the runs in
    no experiment). ``deleted``: False only runs not deleted, True only deleted ones, None both.
    Without ``order``: newest first. ``offset`` and ``limit`` page the ordered result.
    """

    experiments: tuple[str, ...]
    clauses: tuple[Clause, ...] = ()
    order: tuple[OrderKey, ...] = ()
    deleted: bool | None = False
    offset: int = 0
    limit: int = 1000


class TrackingStore(abc.ABC):
    # --- experiments ---

    @abc.abstractmethod
    def create_experiment(self, workspace_id: str, name: str, tags: dict[str, str]) -> Experiment:
        """Raises ConflictError when the workspace has an experiment of that name (deleted too)."""

    @abc.abstractmethod
    def get_experiment(self, workspace_id: str, experiment_id: str) -> Experiment: ...

    @abc.abstractmethod
    def experiment_by_name(self, workspace_id: str, name: str) -> Experiment | None: ...

    @abc.abstractmethod
    def list_experiments(self, workspace_id: str) -> builtins.list[Experiment]:
        """Every experiment of the workspace, deleted ones too, oldest first."""

    @abc.abstractmethod
    def update_experiment(
        self,
        workspace_id: str,
        experiment_id: str,
        *,
        name: str | None = None,
        deleted: bool | None = None,
        tags: dict[str, str] | None = None,
        drop_tag: str | None = None,
    ) -> Experiment:
        """Rename (its runs follow, in the same transaction; ConflictError on a taken name),
        delete or restore, set tags, remove a tag."""

    # --- runs (the run rows are RunStore's) ---

    @abc.abstractmethod
    def create_run(
        self,
        workspace_id: str,
        *,
        job_id: str | None,
        name: str | None,
        experiment: str,
        tags: dict[str, str],
        adopt: str | None = None,
    ) -> Run:
        """A new running run in ``experiment``, named ``name`` (or a generated name).

        ``adopt``: a job's own run. When it is still running and in no experiment, it is taken
        instead of creating a run: it moves into ``experiment``, gets the tags, and ``name`` if
        given (compare-and-set, so of two concurrent creates only one adopts it).
        """

    @abc.abstractmethod
    def update_run(
        self,
        workspace_id: str,
        run_id: str,
        *,
        status: str | None = None,
        finished_at: datetime | None = None,
        name: str | None = None,
        deleted: bool | None = None,
    ) -> Run:
        """Set the given fields (None: unchanged). A status other than ``running`` sets
        ``finished_at`` (now when not given); ``running`` clears it."""

    @abc.abstractmethod
    def log_params_and_tags(
        self, workspace_id: str, run_id: str, params: dict[str, str], tags: dict[str, str]
    ) -> Run:
        """Add params (a param the run has with another value: BadRequestError, nothing written)
        and set tags, in one transaction."""

    @abc.abstractmethod
    def delete_tag(self, workspace_id: str, run_id: str, key: str) -> Run:
        """NotFoundError when the run has no such tag."""

    @abc.abstractmethod
    def search_runs(self, workspace_id: str, query: RunQuery) -> builtins.list[Run]: ...

    @abc.abstractmethod
    def latest_points(
        self, workspace_id: str, run_ids: builtins.list[str]
    ) -> dict[str, dict[str, tuple[int, float, float | None]]]:
        """For each run, each metric's last point: (step, unix seconds, value or None if not finite)."""

    # --- artifacts ---

    @abc.abstractmethod
    def put_artifact(self, workspace_id: str, run_id: str, path: str, digest: str, size: int) -> str | None:
        """Record the file at ``path`` (replacing one there) and reference its blob, in one
        transaction; returns the digest the path held before, when it was another. ConflictError
        when ``path`` is a folder of the run's files or lies below one of its files."""

    @abc.abstractmethod
    def release_artifact(self, workspace_id: str, run_id: str, digest: str) -> builtins.list[str]:
        """Drop the run's reference to ``digest`` unless one of its paths still holds it; returns
        ``[digest]`` when no reference of any kind is left to it (the caller removes the blob)."""

    @abc.abstractmethod
    def artifacts(self, workspace_id: str, run_id: str, prefix: str = "") -> builtins.list[RunArtifact]:
        """The run's files at ``prefix`` or below it (every file for ``""``), by path."""

    @abc.abstractmethod
    def delete_artifacts(self, workspace_id: str, run_id: str, prefix: str) -> builtins.list[str]:
        """Remove the file at ``prefix`` and every file below it; returns the digests no reference
        is left to."""
