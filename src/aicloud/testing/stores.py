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
The run store lives in ``testing.runs`` and is re-exported here.
"""

from __future__ import annotations

import builtins
import dataclasses
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from aicloud.entities import BlobOwner, Job, JobKind, JobStatus
from aicloud.errors import NotFoundError
from aicloud.store.sql.session import json_normalize
from aicloud.store.training import BlobRefStore, JobStore
from aicloud.testing.runs import InMemoryRunStore

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
        kind: JobKind | None = None,
        offset: int = 0,
    ) -> builtins.list[Job]:
        with self._lock:
            jobs = self._matching(workspace_id, status, parent_id, kind)
            jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
            return [self._out(job) for job in jobs[offset : offset + limit]]

    def count(
        self,
        workspace_id: str,
        *,
        status: JobStatus | None = None,
        parent_id: str | None = None,
        kind: JobKind | None = None,
    ) -> int:
        with self._lock:
            return len(self._matching(workspace_id, status, parent_id, kind))

    def _matching(
        self, workspace_id: str, status: JobStatus | None, parent_id: str | None, kind: JobKind | None
    ) -> builtins.list[Job]:
        return [
            job
            for job in self._jobs.values()
            if job.workspace_id == workspace_id
            and (status is None or job.status == status)
            and (parent_id is None or job.parent_id == parent_id)
            and (kind is None or job.kind == kind)
        ]

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
