"""Experiment tracking over SQL: experiments, a run's experiment, tags and soft delete, its
artifacts (``store.tracking``). The run rows, params and metric points are ``runs.py``'s."""

from __future__ import annotations

import builtins
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from aicloud.entities import BlobOwner, Experiment, Run, RunArtifact, RunStatus
from aicloud.errors import BadRequestError, ConflictError, NotFoundError
from aicloud.store.sql import ids
from aicloud.store.sql.blobrefs import add_refs, lock_digests
from aicloud.store.sql.runs import RUN_PREFIX, _entity, _find
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import BlobRefRow, ExperimentRow, JobRow, RunArtifactRow, RunRow
from aicloud.store.sql.tracking_search import conditions, order_terms
from aicloud.store.tracking import RunQuery, TrackingStore, param_text

EXPERIMENT_PREFIX = "exp"


def _experiment(row: ExperimentRow) -> Experiment:
    return Experiment(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        deleted=row.deleted_at is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        tags=dict(row.tags or {}),
    )


def _artifact(row: RunArtifactRow) -> RunArtifact:
    return RunArtifact(
        run_id=row.run_id, path=row.path, digest=row.digest, size=row.size_bytes, created_at=row.created_at
    )


def _find_experiment(session: Session, workspace_id: str, experiment_id: str) -> ExperimentRow:
    row = session.scalar(
        select(ExperimentRow).where(
            ExperimentRow.id == experiment_id, ExperimentRow.workspace_id == workspace_id
        )
    )
    if row is None:
        raise NotFoundError.of("experiment", experiment_id)
    return row


def _under(prefix: str) -> Any:
    """Paths strictly below the folder ``prefix``: their first characters equal ``prefix/`` (an
    equality, so neither LIKE's wildcards and case rules nor a collation's order get in the way)."""
    head = prefix + "/"
    return func.substr(RunArtifactRow.path, 1, len(head)) == head


def _release(session: Session, workspace_id: str, run_id: str, digests: set[str]) -> builtins.list[str]:
    """Drop the run's references to ``digests`` none of its paths holds any more; the ones no
    reference of any kind is left to."""
    held = set(
        session.scalars(
            select(RunArtifactRow.digest).where(
                RunArtifactRow.run_id == run_id, RunArtifactRow.digest.in_(digests)
            )
        )
    )
    gone = sorted(digests - held)
    if not gone:
        return []
    lock_digests(session, gone)
    session.execute(
        delete(BlobRefRow)
        .where(
            BlobRefRow.digest.in_(gone),
            BlobRefRow.workspace_id == workspace_id,
            BlobRefRow.owner_kind == BlobOwner.RUN_ARTIFACT.value,
            BlobRefRow.owner_id == run_id,
        )
        .execution_options(synchronize_session=False)
    )
    used = set(session.scalars(select(BlobRefRow.digest).where(BlobRefRow.digest.in_(gone)).distinct()))
    return [d for d in gone if d not in used]


class SqlTrackingStore(TrackingStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- experiments ---

    def create_experiment(self, workspace_id: str, name: str, tags: dict[str, str]) -> Experiment:
        def tx(session: Session) -> Experiment:
            now = ids.utcnow()
            row = ExperimentRow(
                id=ids.new_id(EXPERIMENT_PREFIX),
                workspace_id=workspace_id,
                name=name,
                tags=dict(tags),
                deleted_at=None,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return _experiment(row)

        return self._db.run(
            tx,
            conflict=lambda: ConflictError(
                f"experiment {name!r} already exists", details={"kind": "experiment", "name": name}
            ),
            missing=lambda: NotFoundError.of("workspace", workspace_id),
        )

    def get_experiment(self, workspace_id: str, experiment_id: str) -> Experiment:
        return self._db.run(
            lambda session: _experiment(_find_experiment(session, workspace_id, experiment_id)), write=False
        )

    def experiment_by_name(self, workspace_id: str, name: str) -> Experiment | None:
        def tx(session: Session) -> Experiment | None:
            query = select(ExperimentRow).where(
                ExperimentRow.workspace_id == workspace_id, ExperimentRow.name == name
            )
            row = session.scalar(query)
            return None if row is None else _experiment(row)

        return self._db.run(tx, write=False)

    def list_experiments(self, workspace_id: str) -> builtins.list[Experiment]:
        def tx(session: Session) -> builtins.list[Experiment]:
            query = (
                select(ExperimentRow)
                .where(ExperimentRow.workspace_id == workspace_id)
                .order_by(ExperimentRow.created_at, ExperimentRow.id)
            )
            return [_experiment(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

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
        def tx(session: Session) -> Experiment:
            row = _find_experiment(session, workspace_id, experiment_id)
            if name is not None and name != row.name:
                session.execute(
                    update(RunRow)
                    .where(RunRow.workspace_id == workspace_id, RunRow.experiment == row.name)
                    .values(experiment=name)
                    .execution_options(synchronize_session=False)
                )
                row.name = name
            if deleted is not None:
                row.deleted_at = ids.utcnow() if deleted else None
            if tags or drop_tag is not None:
                merged = {**(row.tags or {}), **(tags or {})}
                if drop_tag is not None and merged.pop(drop_tag, None) is None:
                    raise NotFoundError(
                        f"experiment {experiment_id} has no tag {drop_tag!r}", details={"kind": "tag"}
                    )
                row.tags = merged
            row.updated_at = ids.utcnow()
            session.flush()
            return _experiment(row)

        return self._db.run(
            tx,
            conflict=lambda: ConflictError(
                f"experiment {name!r} already exists", details={"kind": "experiment", "name": name}
            ),
        )

    # --- runs ---

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
        def tx(session: Session) -> Run:
            if adopt is not None:
                query = select(RunRow).where(
                    RunRow.id == adopt,
                    RunRow.workspace_id == workspace_id,
                    RunRow.experiment.is_(None),
                    RunRow.status == RunStatus.RUNNING.value,
                    RunRow.deleted_at.is_(None),
                )
                row = session.scalar(query.with_for_update())
                if row is not None:
                    row.experiment = experiment
                    row.tags = {**(row.tags or {}), **tags}
                    if name:
                        row.name = name
                    session.flush()
                    return _entity(row)
            if job_id is not None:
                query_job = select(JobRow.id).where(JobRow.id == job_id, JobRow.workspace_id == workspace_id)
                if session.scalar(query_job) is None:
                    raise NotFoundError.of("job", job_id)
            row = RunRow(
                id=ids.new_id(RUN_PREFIX),
                workspace_id=workspace_id,
                job_id=job_id,
                name=name or f"run-{secrets.token_hex(4)}",
                status=RunStatus.RUNNING.value,
                params={},
                summary={},
                created_at=ids.utcnow(),
                experiment=experiment,
                tags=dict(tags),
            )
            session.add(row)
            session.flush()
            return _entity(row)

        return self._db.run(tx, missing=lambda: NotFoundError.of("workspace", workspace_id))

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
        def tx(session: Session) -> Run:
            row = _find(session, workspace_id, run_id, lock=True)
            if status is not None:
                row.status = RunStatus(status).value
                running = row.status == RunStatus.RUNNING.value
                row.finished_at = None if running else (finished_at or row.finished_at or ids.utcnow())
            if name:
                row.name = name
            if deleted is not None:
                row.deleted_at = ids.utcnow() if deleted else None
            session.flush()
            return _entity(row)

        return self._db.run(tx)

    def log_params_and_tags(
        self, workspace_id: str, run_id: str, params: dict[str, str], tags: dict[str, str]
    ) -> Run:
        def tx(session: Session) -> Run:
            row = _find(session, workspace_id, run_id, lock=True)
            have = dict(row.params or {})
            for key, value in params.items():
                if key in have and param_text(have[key]) != value:
                    raise BadRequestError(
                        f"param {key!r} was logged as {param_text(have[key])!r} and cannot change to "
                        f"{value!r}: a run's params are fixed once logged",
                        details={"key": key},
                    )
            new = {k: v for k, v in params.items() if k not in have}
            if new:
                row.params = {**have, **new}
            if tags:
                row.tags = {**(row.tags or {}), **tags}
            session.flush()
            return _entity(row)

        return self._db.run(tx)

    def delete_tag(self, workspace_id: str, run_id: str, key: str) -> Run:
        def tx(session: Session) -> Run:
            row = _find(session, workspace_id, run_id, lock=True)
            tags = dict(row.tags or {})
            if tags.pop(key, None) is None:
                raise NotFoundError(f"run {run_id} has no tag {key!r}", details={"kind": "tag"})
            row.tags = tags
            session.flush()
            return _entity(row)

        return self._db.run(tx)

    def search_runs(self, workspace_id: str, query: RunQuery) -> builtins.list[Run]:
        def tx(session: Session) -> builtins.list[Run]:
            where = conditions(workspace_id, query, self._db.dialect)
            statement = (
                select(RunRow)
                .where(*where)
                .order_by(*order_terms(query.order))
                .offset(query.offset)
                .limit(query.limit)
            )
            return [_entity(row) for row in session.scalars(statement)]

        return self._db.run(tx, write=False)

    def latest_points(
        self, workspace_id: str, run_ids: builtins.list[str]
    ) -> dict[str, dict[str, tuple[int, float, float | None]]]:
        def tx(session: Session) -> dict[str, dict[str, tuple[int, float, float | None]]]:
            query = select(RunRow.id, RunRow.summary).where(
                RunRow.workspace_id == workspace_id, RunRow.id.in_(run_ids)
            )
            out: dict[str, dict[str, tuple[int, float, float | None]]] = {}
            for run_id, summary in session.execute(query):
                out[run_id] = {
                    name: (int(last[0]), float(last[1]), None if last[2] is None else float(last[2]))
                    for name, last in (summary or {}).items()
                }
            return out

        return self._db.run(tx, write=False) if run_ids else {}

    # --- artifacts ---

    def put_artifact(self, workspace_id: str, run_id: str, path: str, digest: str, size: int) -> str | None:
        parts = path.split("/")
        ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]

        def tx(session: Session) -> str | None:
            _find(session, workspace_id, run_id, lock=True)
            mine = RunArtifactRow.run_id == run_id
            clash = session.scalar(
                select(RunArtifactRow.path)
                .where(mine, _under(path) | RunArtifactRow.path.in_(ancestors))
                .limit(1)
            )
            if clash is not None:
                raise ConflictError(
                    f"cannot store {path!r}: the run has a file at {clash!r} (a file and a folder cannot "
                    "share a path)",
                    details={"path": path, "existing": clash},
                )
            add_refs(session, workspace_id, BlobOwner.RUN_ARTIFACT, run_id, [digest])
            row = session.get(RunArtifactRow, (run_id, path))
            before = None if row is None else row.digest
            if row is None:
                session.add(
                    RunArtifactRow(
                        run_id=run_id, path=path, digest=digest, size_bytes=size, created_at=ids.utcnow()
                    )
                )
            else:
                row.digest, row.size_bytes, row.created_at = digest, size, ids.utcnow()
            session.flush()
            return before if before != digest else None

        return self._db.run(tx)

    def release_artifact(self, workspace_id: str, run_id: str, digest: str) -> builtins.list[str]:
        def tx(session: Session) -> builtins.list[str]:
            _find(session, workspace_id, run_id, lock=True)
            return _release(session, workspace_id, run_id, {digest})

        return self._db.run(tx)

    def artifacts(self, workspace_id: str, run_id: str, prefix: str = "") -> builtins.list[RunArtifact]:
        def tx(session: Session) -> builtins.list[RunArtifact]:
            _find(session, workspace_id, run_id)
            query = select(RunArtifactRow).where(RunArtifactRow.run_id == run_id)
            if prefix:
                query = query.where((RunArtifactRow.path == prefix) | _under(prefix))
            return [_artifact(row) for row in session.scalars(query.order_by(RunArtifactRow.path))]

        return self._db.run(tx, write=False)

    def delete_artifacts(self, workspace_id: str, run_id: str, prefix: str) -> builtins.list[str]:
        def tx(session: Session) -> builtins.list[str]:
            _find(session, workspace_id, run_id, lock=True)
            chosen = (RunArtifactRow.run_id == run_id) & ((RunArtifactRow.path == prefix) | _under(prefix))
            digests = set(session.scalars(select(RunArtifactRow.digest).where(chosen)))
            session.execute(delete(RunArtifactRow).where(chosen).execution_options(synchronize_session=False))
            return _release(session, workspace_id, run_id, digests) if digests else []

        return self._db.run(tx)
