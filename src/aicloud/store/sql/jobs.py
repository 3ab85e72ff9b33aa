"""Jobs: a spec, a status that moves only by compare-and-set, and the executor's handle.

``transition`` is one ``UPDATE ... WHERE id = :id AND status IN (:expect) RETURNING ...``.
On PostgreSQL a concurrent writer waits for the row lock and then re-checks the ``WHERE``
against the committed row, so of two racing transitions exactly one matches; SQLite writers
are serial (``BEGIN IMMEDIATE``). ``request_cancel`` is built from the same conditional
updates, so it never races the controller either.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import Update, select, update
from sqlalchemy.orm import Session

from aicloud.entities import BlobOwner, Job, JobKind, JobStatus
from aicloud.errors import NotFoundError
from aicloud.store.sql import ids
from aicloud.store.sql.blobrefs import add_refs
from aicloud.store.sql.session import Database, count_rows, json_normalize
from aicloud.store.sql.tables import JobRow
from aicloud.store.training import JobStore

JOB_PREFIX = "job"


def _entity(row: JobRow) -> Job:
    return Job(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        kind=JobKind(row.kind),
        spec=row.spec,
        status=JobStatus(row.status),
        priority=row.priority,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        cancel_requested=row.cancel_requested,
        reason=row.reason,
        message=row.message,
        handle=row.handle or {},
        run_id=row.run_id,
        model_version_id=row.model_version_id,
        log_digest=row.log_digest,
        usage=row.usage or {},
        created_by=row.created_by,
        parent_id=row.parent_id,
        attempt=row.attempt or 0,
        checkpoint=row.checkpoint or {},
    )


def _set(**values: Any) -> dict[str, Any]:
    """The columns to change: None means unchanged; JSON values normalised."""
    changes = {}
    for column, value in values.items():
        if value is None:
            continue
        changes[column] = json_normalize(value) if isinstance(value, dict) else value
    return changes


def _add_blob_refs(session: Session, row: JobRow) -> None:
    """Reference the blobs the job keeps: its code archive, its log, each checkpoint it stored
    (an earlier checkpoint keeps its reference when a later one replaces it)."""
    owned = (
        (BlobOwner.JOB_CODE, (row.spec or {}).get("code")),
        (BlobOwner.JOB_LOG, row.log_digest),
        (BlobOwner.JOB_CHECKPOINT, (row.checkpoint or {}).get("digest")),
    )
    for owner, digest in owned:
        if isinstance(digest, str) and digest:
            add_refs(session, row.workspace_id, owner, row.id, [digest])


def _where(
    workspace_id: str, status: JobStatus | None, parent_id: str | None, kind: JobKind | None
) -> builtins.list[Any]:
    """The conditions of ``list`` and ``count``."""
    where: builtins.list[Any] = [JobRow.workspace_id == workspace_id]
    if parent_id is not None:
        where.append(JobRow.parent_id == parent_id)
    if status is not None:
        where.append(JobRow.status == JobStatus(status).value)
    if kind is not None:
        where.append(JobRow.kind == JobKind(kind).value)
    return where


def _returning(statement: Update) -> Any:
    return statement.returning(JobRow).execution_options(synchronize_session=False)


class SqlJobStore(JobStore):
    def __init__(self, db: Database) -> None:
        self._db = db

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
        spec = json_normalize(spec)

        def tx(session: Session) -> Job:
            row = JobRow(
                id=ids.new_id(JOB_PREFIX),
                workspace_id=workspace_id,
                name=name,
                kind=JobKind(kind).value,
                spec=spec,
                status=JobStatus.PENDING.value,
                priority=priority,
                created_at=ids.utcnow(),
                cancel_requested=False,
                handle={},
                usage={},
                created_by=created_by,
                parent_id=parent_id,
                attempt=0,
            )
            session.add(row)
            session.flush()
            _add_blob_refs(session, row)
            return _entity(row)

        return self._db.run(tx, missing=lambda: NotFoundError.of("workspace", workspace_id))

    def get(self, workspace_id: str, job_id: str) -> Job:
        def tx(session: Session) -> Job:
            row = session.get(JobRow, job_id)
            if row is None or row.workspace_id != workspace_id:
                raise NotFoundError.of("job", job_id)
            return _entity(row)

        return self._db.run(tx, write=False)

    def get_any(self, job_id: str) -> Job:
        def tx(session: Session) -> Job:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFoundError.of("job", job_id)
            return _entity(row)

        return self._db.run(tx, write=False)

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
        where = _where(workspace_id, status, parent_id, kind)

        def tx(session: Session) -> builtins.list[Job]:
            query = (
                select(JobRow)
                .where(*where)
                .order_by(JobRow.created_at.desc(), JobRow.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_entity(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

    def count(
        self,
        workspace_id: str,
        *,
        status: JobStatus | None = None,
        parent_id: str | None = None,
        kind: JobKind | None = None,
    ) -> int:
        where = _where(workspace_id, status, parent_id, kind)

        def tx(session: Session) -> int:
            return count_rows(session, JobRow, *where)

        return self._db.run(tx, write=False)

    def finished_between(
        self, workspace_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[Job]:
        def tx(session: Session) -> builtins.list[Job]:
            query = select(JobRow).where(JobRow.workspace_id == workspace_id, JobRow.finished_at.is_not(None))
            if since is not None:
                query = query.where(JobRow.finished_at >= since)
            if until is not None:
                query = query.where(JobRow.finished_at < until)
            query = query.order_by(JobRow.finished_at, JobRow.id)
            return [_entity(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

    def in_states(
        self, states: builtins.list[JobStatus], *, kinds: builtins.list[JobKind] | None = None
    ) -> builtins.list[Job]:
        wanted = [JobStatus(state).value for state in states]

        def tx(session: Session) -> builtins.list[Job]:
            if not wanted or kinds == []:
                return []
            query = select(JobRow).where(JobRow.status.in_(wanted))
            if kinds is not None:
                query = query.where(JobRow.kind.in_([JobKind(kind).value for kind in kinds]))
            query = query.order_by(JobRow.priority.desc(), JobRow.created_at, JobRow.id)
            return [_entity(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

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
        """Compare-and-set; None when the job was not in ``expect``, NotFoundError when it is gone."""
        expected = [JobStatus(state).value for state in expect]
        changes = _set(
            status=JobStatus(status).value,
            reason=reason,
            message=message,
            handle=handle,
            started_at=started_at,
            finished_at=finished_at,
            log_digest=log_digest,
            usage=usage,
        )

        def tx(session: Session) -> Job | None:
            statement = update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(expected)).values(changes)
            row = session.scalars(_returning(statement)).one_or_none()
            if row is not None:
                if log_digest is not None:
                    _add_blob_refs(session, row)
                return _entity(row)
            if session.scalar(select(JobRow.id).where(JobRow.id == job_id)) is None:
                raise NotFoundError.of("job", job_id)
            return None

        return self._db.run(tx)

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
        changes = _set(
            handle=handle,
            run_id=run_id,
            model_version_id=model_version_id,
            message=message,
            usage=usage,
            log_digest=log_digest,
            attempt=attempt,
            checkpoint=checkpoint,
        )

        def tx(session: Session) -> Job:
            row: JobRow | None
            if changes:
                statement = update(JobRow).where(JobRow.id == job_id).values(changes)
                row = session.scalars(_returning(statement)).one_or_none()
            else:
                row = session.get(JobRow, job_id)
            if row is None:
                raise NotFoundError.of("job", job_id)
            if log_digest is not None or checkpoint is not None:
                _add_blob_refs(session, row)
            return _entity(row)

        return self._db.run(tx)

    def request_cancel(self, workspace_id: str, job_id: str) -> Job:
        """A pending job is cancelled at once; a running one is flagged; a finished one is left alone."""

        def tx(session: Session) -> Job:
            mine = (JobRow.id == job_id, JobRow.workspace_id == workspace_id)
            cancel_pending = (
                update(JobRow)
                .where(*mine, JobRow.status == JobStatus.PENDING.value)
                .values(
                    status=JobStatus.CANCELLED.value,
                    cancel_requested=True,
                    reason="cancelled",
                    finished_at=ids.utcnow(),
                )
            )
            flag_running = (
                update(JobRow)
                .where(*mine, JobRow.status == JobStatus.RUNNING.value)
                .values(cancel_requested=True)
            )
            for statement in (cancel_pending, flag_running):
                row = session.scalars(_returning(statement)).one_or_none()
                if row is not None:
                    return _entity(row)
            row = session.scalar(select(JobRow).where(*mine))
            if row is None:
                raise NotFoundError.of("job", job_id)
            return _entity(row)

        return self._db.run(tx)
