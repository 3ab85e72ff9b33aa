"""In-memory :class:`RunStore` for unit tests (``testing.stores`` re-exports it).

It keeps the SQL store's semantics: entities out, params read back as JSON would, the run
summary kept as the last value of each metric by (step, timestamp), non-finite metric values
read back as NaN (``metric_history``, ``summary``) or None (``metric_columns``), the filters
and orders of ``RunFilter``, and NotFoundError for missing runs and for runs of another
workspace alike. Every method holds one lock. Give it the job store (``InMemoryRunStore(jobs)``)
to make ``create`` check the run's ``job_id`` and the ``job`` and ``model`` filters see job names
and specs (a model matches the job spec's ``model_name`` only: there is no model store here).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import math
import operator
import secrets
import threading
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aicloud.entities import MetricPoint, Run, RunStatus
from aicloud.entities.series import MetricStats
from aicloud.errors import NotFoundError
from aicloud.store.sql.session import json_normalize
from aicloud.store.training import RunFilter, RunStore

if TYPE_CHECKING:
    from aicloud.testing.stores import InMemoryJobStore

__all__ = ["InMemoryRunStore"]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}


@dataclasses.dataclass
class _RunState:
    run: Run
    # name → (step, timestamp, value) of the point the summary shows; None for a non-finite value.
    last: dict[str, tuple[int, float, float | None]] = dataclasses.field(default_factory=dict)
    # (name, step, timestamp, value, insertion order)
    points: builtins.list[tuple[str, int, float, float | None, int]] = dataclasses.field(default_factory=list)

    def last_value(self, name: str) -> float | None:
        last = self.last.get(name)
        return None if last is None else last[2]


def _finite(value: float) -> float | None:
    """As the SQL store keeps it: a value that is not finite (NaN, infinity) reads back as NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _sortable(value: Any) -> tuple[int, Any]:
    """A sort key as the SQL stores order values: numbers (booleans as 0 and 1), then text, then
    anything else by its JSON text; None (missing) anywhere, the caller puts those last."""
    if value is None:
        return (0, 0.0)
    if isinstance(value, int | float):
        return (0, float(value))
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def _param_matches(params: dict[str, Any], name: str, values: tuple[Any, ...]) -> bool:
    if name not in params:
        return False
    value = params[name]
    # JSON equality: booleans are not numbers, numbers compare by value.
    return any(isinstance(value, bool) == isinstance(v, bool) and value == v for v in values)


class InMemoryRunStore(RunStore):
    """A thread-safe RunStore in a dict; see the module docstring."""

    def __init__(self, jobs: InMemoryJobStore | None = None) -> None:
        self._jobs = jobs
        self._runs: dict[str, _RunState] = {}
        self._seq = 0  # insertion order, the last tie-breaker of a metric series
        self._lock = threading.RLock()

    @staticmethod
    def _out(state: _RunState, metrics: Collection[str] | None = None) -> Run:
        return dataclasses.replace(
            state.run,
            params=json_normalize(state.run.params),
            summary={
                name: _nan(value)
                for name, (_, _, value) in sorted(state.last.items())
                if metrics is None or name in metrics
            },
        )

    def _find(self, workspace_id: str, run_id: str) -> _RunState:
        state = self._runs.get(run_id)
        if state is None or state.run.workspace_id != workspace_id:
            raise NotFoundError.of("run", run_id)
        return state

    def create(
        self, *, workspace_id: str, job_id: str | None, name: str, params: dict[str, Any] | None = None
    ) -> Run:
        if job_id is not None and self._jobs is not None:
            self._jobs.get(workspace_id, job_id)
        run = Run(
            id=f"run_{secrets.token_hex(10)}",
            workspace_id=workspace_id,
            job_id=job_id,
            name=name,
            status=RunStatus.RUNNING,
            params=json_normalize(params or {}),
            created_at=datetime.now(UTC),
        )
        with self._lock:
            state = _RunState(run)
            self._runs[run.id] = state
            return self._out(state)

    def get(self, workspace_id: str, run_id: str) -> Run:
        with self._lock:
            return self._out(self._find(workspace_id, run_id))

    def _selected(self, workspace_id: str, job_id: str | None, where: RunFilter) -> builtins.list[_RunState]:
        """The runs ``where`` keeps, in its order (the offset aside)."""
        states = [
            state
            for state in self._runs.values()
            if state.run.workspace_id == workspace_id
            and (job_id is None or state.run.job_id == job_id)
            and (where.status is None or state.run.status == where.status)
            and (where.ids is None or state.run.id in where.ids)
            and (not where.name or where.name.lower() in state.run.name.lower())
            and self._matches(state, where)
        ]
        states.sort(key=lambda state: (state.run.created_at, state.run.id), reverse=not where.oldest_first)
        key: Callable[[_RunState], Any] | None = None
        if where.metric is not None:
            metric = where.metric
            key = lambda state: state.last_value(metric)  # noqa: E731
        elif where.param is not None:
            param = where.param
            key = lambda state: state.run.params.get(param)  # noqa: E731
        if key is not None:
            # Stable sorts: by the key, runs without one last, newest first on ties.
            states.sort(key=lambda state: (state.run.created_at, state.run.id), reverse=True)
            states.sort(key=lambda state: _sortable(key(state)), reverse=where.descending)
            states.sort(key=lambda state: key(state) is None)
        return states

    def list(
        self,
        workspace_id: str,
        *,
        job_id: str | None = None,
        limit: int = 100,
        where: RunFilter | None = None,
        metrics: Collection[str] | None = None,
    ) -> builtins.list[Run]:
        where = where or RunFilter()
        with self._lock:
            states = self._selected(workspace_id, job_id, where)
            return [self._out(state, metrics) for state in states[where.offset :][:limit]]

    def count(self, workspace_id: str, *, job_id: str | None = None, where: RunFilter | None = None) -> int:
        with self._lock:
            return len(self._selected(workspace_id, job_id, where or RunFilter()))

    def _matches(self, state: _RunState, where: RunFilter) -> bool:
        """``where``'s job, model, metric and param conditions."""
        run = state.run
        for condition in where.metrics:
            value = state.last_value(condition.name)
            if value is None or not _OPS[condition.op](value, condition.value):
                return False
        for param in where.params:
            if param.name not in run.params:
                return False
            if _param_matches(run.params, param.name, param.values) == param.negate:
                return False
        if where.job is None and where.model is None:
            return True
        job = None
        if run.job_id is not None and self._jobs is not None:
            job = self._jobs.get(run.workspace_id, run.job_id)
        if where.job is not None and where.job not in (run.job_id, job and job.name):
            return False
        return where.model is None or (job is not None and job.spec.get("model_name") == where.model)

    def log_params(self, workspace_id: str, run_id: str, params: dict[str, Any]) -> Run:
        with self._lock:
            state = self._find(workspace_id, run_id)
            merged = {**state.run.params, **json_normalize(params)}
            state.run = dataclasses.replace(state.run, params=merged)
            return self._out(state)

    def log_metrics(self, workspace_id: str, run_id: str, points: builtins.list[MetricPoint]) -> int:
        rows = [(p.name, int(p.step), _finite(p.value), float(p.timestamp)) for p in points]
        with self._lock:
            state = self._find(workspace_id, run_id)
            for name, step, value, timestamp in rows:
                self._seq += 1
                state.points.append((name, step, timestamp, value, self._seq))
                current = state.last.get(name)
                if current is None or (step, timestamp) >= current[:2]:
                    state.last[name] = (step, timestamp, value)
            return len(rows)

    def _series(self, workspace_id: str, run_id: str, name: str | None) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            state = self._find(workspace_id, run_id)
            points = [p for p in state.points if name is None or p[0] == name]
        points.sort(key=lambda p: (p[0], p[1], p[2], p[4]))
        return points

    def metric_history(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> builtins.list[MetricPoint]:
        return [
            MetricPoint(name=n, step=step, value=_nan(value), timestamp=timestamp)
            for n, step, timestamp, value, _ in self._series(workspace_id, run_id, name)
        ]

    def metric_columns(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> dict[str, dict[str, builtins.list[Any]]]:
        columns: dict[str, dict[str, builtins.list[Any]]] = {}
        for n, step, timestamp, value, _ in self._series(workspace_id, run_id, name):
            series = columns.get(n)
            if series is None:
                series = columns[n] = {"steps": [], "values": [], "timestamps": []}
            series["steps"].append(step)
            series["values"].append(value)
            series["timestamps"].append(timestamp)
        return columns

    def metric_stats(
        self, workspace_id: str, run_id: str, names: Collection[str] | None = None
    ) -> builtins.list[MetricStats]:
        stats = []
        for name, series in self.metric_columns(workspace_id, run_id).items():
            if names is not None and name not in names:
                continue
            with self._lock:
                step, timestamp, value = self._find(workspace_id, run_id).last[name]
            finite = [v for v in series["values"] if v is not None]
            stats.append(
                MetricStats(
                    name=name,
                    count=len(series["steps"]),
                    last_step=step,
                    last_timestamp=timestamp,
                    last_value=_nan(value),
                    min_value=min(finite) if finite else None,
                    max_value=max(finite) if finite else None,
                )
            )
        return stats

    def finish(self, workspace_id: str, run_id: str, status: RunStatus) -> Run:
        with self._lock:
            state = self._find(workspace_id, run_id)
            state.run = dataclasses.replace(
                state.run, status=RunStatus(status), finished_at=datetime.now(UTC)
            )
            return self._out(state)
