"""In-memory :class:`JobStore`, :class:`RunStore` and :class:`BlobRefStore` for unit tests.

They keep the SQL stores' semantics: entities out (never the stored objects themselves),
JSON fields read back as JSON would (tuples become lists, NaN becomes None), compare-and-set
``transition``, queue order in ``in_states``, cancel rules in ``request_cancel``, the run
summary kept as the last value of each metric by (step, timestamp), non-finite metric
values read back as NaN (``metric_history``, ``summary``) or None (``metric_columns``), and
NotFoundError for missing objects and for objects of another workspace alike. Every method holds one lock, so
the stores are safe to share between threads, and each call is atomic as a transaction is.

Workspaces are not checked: any ``workspace_id`` is accepted on create. Give the run store
the job store (``InMemoryRunStore(jobs)``) to make ``create`` check the run's ``job_id``.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from aicloud.entities import BlobOwner, Job, JobKind, JobStatus, MetricPoint, Run, RunStatus
from aicloud.errors import NotFoundError
from aicloud.store.sql.session import json_normalize
from aicloud.store.training import BlobRefStore, JobStore, RunFilter, RunStore

__all__ = ["InMemoryBlobRefStore", "InMemoryJobStore", "InMemoryRunStore"]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware datetimes only")
    return None if value is None else value.astimezone(UTC)


class InMemoryJobStore(JobStore):
    """A thread-safe JobStore in a dict; see the module docstring."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()

    # Stored jobs are frozen, and their dicts are never handed out: every read copies them.
    @staticmethod
    def _out(job: Job) -> Job:
        return dataclasses.replace(
            job,
            spec=json_normalize(job.spec),
            handle=json_normalize(job.handle),
            usage=json_normalize(job.usage),
            checkpoint=json_normalize(job.checkpoint),
        )

    def _find(self, job_id: str, workspace_id: str | None = None) -> Job:
        job = self._jobs.get(job_id)
        if job is None or (workspace_id is not None and job.workspace_id != workspace_id):
            raise NotFoundError.of("job", job_id)
        return job

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
        job = Job(
            id=_new_id("job"),
            workspace_id=workspace_id,
            name=name,
            kind=JobKind(kind),
            spec=json_normalize(spec),
            status=JobStatus.PENDING,
            priority=priority,
            created_at=_now(),
            created_by=created_by,
            parent_id=parent_id,
        )
        with self._lock:
            self._jobs[job.id] = job
            return self._out(job)

    def get(self, workspace_id: str, job_id: str) -> Job:
        with self._lock:
            return self._out(self._find(job_id, workspace_id))

    def get_any(self, job_id: str) -> Job:
        with self._lock:
            return self._out(self._find(job_id))

    def list(
        self,
        workspace_id: str,
        *,
        status: JobStatus | None = None,
        limit: int = 100,
        parent_id: str | None = None,
    ) -> builtins.list[Job]:
        with self._lock:
            jobs = [
                job
                for job in self._jobs.values()
                if job.workspace_id == workspace_id
                and (status is None or job.status == status)
                and (parent_id is None or job.parent_id == parent_id)
            ]
            jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
            return [self._out(job) for job in jobs[:limit]]

    def finished_between(
        self, workspace_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[Job]:
        low, high = _aware(since), _aware(until)
        with self._lock:
            jobs = [
                job
                for job in self._jobs.values()
                if job.workspace_id == workspace_id
                and job.finished_at is not None
                and (low is None or job.finished_at >= low)
                and (high is None or job.finished_at < high)
            ]
            jobs.sort(key=lambda job: (job.finished_at, job.id))
            return [self._out(job) for job in jobs]

    def in_states(
        self, states: builtins.list[JobStatus], *, kinds: builtins.list[JobKind] | None = None
    ) -> builtins.list[Job]:
        wanted = {JobStatus(state) for state in states}
        with self._lock:
            jobs = [
                job
                for job in self._jobs.values()
                if job.status in wanted and (kinds is None or job.kind in kinds)
            ]
            jobs.sort(key=lambda job: (-job.priority, job.created_at, job.id))
            return [self._out(job) for job in jobs]

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
        changes: dict[str, Any] = {"status": JobStatus(status)}
        for field, value in (
            ("reason", reason),
            ("message", message),
            ("started_at", _aware(started_at)),
            ("finished_at", _aware(finished_at)),
            ("log_digest", log_digest),
        ):
            if value is not None:
                changes[field] = value
        if handle is not None:
            changes["handle"] = json_normalize(handle)
        if usage is not None:
            changes["usage"] = json_normalize(usage)
        with self._lock:
            job = self._find(job_id)
            if job.status not in {JobStatus(state) for state in expect}:
                return None
            job = dataclasses.replace(job, **changes)
            self._jobs[job_id] = job
            return self._out(job)

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
        changes: dict[str, Any] = {}
        fields = (
            ("run_id", run_id),
            ("model_version_id", model_version_id),
            ("message", message),
            ("log_digest", log_digest),
            ("attempt", attempt),
        )
        for field, value in fields:
            if value is not None:
                changes[field] = value
        if handle is not None:
            changes["handle"] = json_normalize(handle)
        if usage is not None:
            changes["usage"] = json_normalize(usage)
        if checkpoint is not None:
            changes["checkpoint"] = json_normalize(checkpoint)
        with self._lock:
            job = dataclasses.replace(self._find(job_id), **changes)
            self._jobs[job_id] = job
            return self._out(job)

    def request_cancel(self, workspace_id: str, job_id: str) -> Job:
        with self._lock:
            job = self._find(job_id, workspace_id)
            if job.status == JobStatus.PENDING:
                job = dataclasses.replace(
                    job,
                    status=JobStatus.CANCELLED,
                    cancel_requested=True,
                    reason="cancelled",
                    finished_at=_now(),
                )
            elif job.status == JobStatus.RUNNING:
                job = dataclasses.replace(job, cancel_requested=True)
            self._jobs[job_id] = job
            return self._out(job)


@dataclasses.dataclass
class _RunState:
    run: Run
    # name → (step, timestamp, value) of the point the summary shows; None for a non-finite value.
    last: dict[str, tuple[int, float, float | None]] = dataclasses.field(default_factory=dict)
    # (name, step, timestamp, value, insertion order)
    points: builtins.list[tuple[str, int, float, float | None, int]] = dataclasses.field(default_factory=list)


def _last(state: _RunState, where: RunFilter) -> float | None:
    last = state.last.get(where.metric or "")
    return None if last is None else last[2]


class InMemoryRunStore(RunStore):
    """A thread-safe RunStore in a dict; see the module docstring."""

    def __init__(self, jobs: InMemoryJobStore | None = None) -> None:
        self._jobs = jobs
        self._runs: dict[str, _RunState] = {}
        self._seq = 0  # insertion order, the last tie-breaker of a metric series
        self._lock = threading.RLock()

    @staticmethod
    def _out(state: _RunState) -> Run:
        return dataclasses.replace(
            state.run,
            params=json_normalize(state.run.params),
            summary={name: _nan(value) for name, (_, _, value) in sorted(state.last.items())},
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
            id=_new_id("run"),
            workspace_id=workspace_id,
            job_id=job_id,
            name=name,
            status=RunStatus.RUNNING,
            params=json_normalize(params or {}),
            created_at=_now(),
        )
        with self._lock:
            state = _RunState(run)
            self._runs[run.id] = state
            return self._out(state)

    def get(self, workspace_id: str, run_id: str) -> Run:
        with self._lock:
            return self._out(self._find(workspace_id, run_id))

    def list(
        self,
        workspace_id: str,
        *,
        job_id: str | None = None,
        limit: int = 100,
        where: RunFilter | None = None,
    ) -> builtins.list[Run]:
        where = where or RunFilter()
        with self._lock:
            states = [
                state
                for state in self._runs.values()
                if state.run.workspace_id == workspace_id
                and (job_id is None or state.run.job_id == job_id)
                and (where.status is None or state.run.status == where.status)
                and self._matches(state.run, where)
            ]
            states.sort(key=lambda state: (state.run.created_at, state.run.id), reverse=True)
            if where.metric is not None:
                # Stable sorts: by the metric's last value, runs without one last, newest first on ties.
                states.sort(key=lambda state: _last(state, where) or 0.0, reverse=where.descending)
                states.sort(key=lambda state: _last(state, where) is None)
            return [self._out(state) for state in states[where.offset :][:limit]]

    def _matches(self, run: Run, where: RunFilter) -> bool:
        """``where``'s job and model filters, through the job store (no model store here: a
        model matches the job spec's ``model_name`` only)."""
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

    def finish(self, workspace_id: str, run_id: str, status: RunStatus) -> Run:
        with self._lock:
            state = self._find(workspace_id, run_id)
            state.run = dataclasses.replace(state.run, status=RunStatus(status), finished_at=_now())
            return self._out(state)


class InMemoryBlobRefStore(BlobRefStore):
    """A thread-safe BlobRefStore: a set of (digest, workspace id, owner kind, owner id).

    ``workspaces`` (ids), when given, is checked on ``add`` as the SQL foreign key is.
    """

    def __init__(self, workspaces: set[str] | None = None) -> None:
        self._workspaces = workspaces
        self._refs: set[tuple[str, str, str, str]] = set()
        self._lock = threading.Lock()

    def add(
        self, workspace_id: str, digest: str, owner: BlobOwner = BlobOwner.UPLOAD, owner_id: str = ""
    ) -> None:
        if self._workspaces is not None and workspace_id not in self._workspaces:
            raise NotFoundError.of("workspace", workspace_id)
        with self._lock:
            self._refs.add((digest, workspace_id, BlobOwner(owner).value, owner_id))

    def owns(self, workspace_id: str, digest: str) -> bool:
        with self._lock:
            return any(d == digest and w == workspace_id for d, w, _, _ in self._refs)

    def in_use(self, digest: str) -> bool:
        with self._lock:
            return any(d == digest for d, _, _, _ in self._refs)

    def release(self, workspace_id: str, owner: BlobOwner, owner_id: str) -> builtins.list[str]:
        mine = (workspace_id, BlobOwner(owner).value, owner_id)
        with self._lock:
            dropped = {ref for ref in self._refs if ref[1:] == mine}
            self._refs -= dropped
            held = {d for d, _, _, _ in self._refs}
            return sorted({d for d, _, _, _ in dropped} - held)


def _finite(value: float) -> float | None:
    """As the SQL stores keep it: a value that is not finite (NaN, infinity) is stored as None."""
    value = float(value)
    return value if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
