"""Runs: params, a summary, and metric series in their own table.

``log_metrics`` is one transaction: lock the run row, insert the batch with one
``executemany`` (Core insert of plain dicts, no ORM objects), and fold the batch into the
run's ``summary`` column, which keeps ``[step, timestamp, value]`` of the last point of each
metric, so reading a run never scans its points. Reads of a series select the four columns
with Core, scan the covering index in series order, and build the result directly from the
driver's tuples, skipping SQLAlchemy's rows. A value that is not finite (NaN, infinity) is
stored as NULL: it reads back as NaN in ``metric_history`` and ``summary``, and as None
(JSON null) in ``metric_columns``.
"""

from __future__ import annotations

import builtins
import math
from itertools import groupby
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Select, Table, insert, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from aicloud.entities import MetricPoint, Run, RunStatus
from aicloud.errors import NotFoundError
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database, json_normalize
from aicloud.store.sql.tables import JobRow, MetricRow, ModelRow, ModelVersionRow, RunRow
from aicloud.store.training import RunFilter, RunStore

RUN_PREFIX = "run"

_NAN = math.nan
_METRICS = cast(Table, MetricRow.__table__)
_STEP, _VALUE, _TIMESTAMP = itemgetter(1), itemgetter(2), itemgetter(3)


def _entity(row: RunRow) -> Run:
    summary = row.summary or {}
    return Run(
        id=row.id,
        workspace_id=row.workspace_id,
        job_id=row.job_id,
        name=row.name,
        status=RunStatus(row.status),
        params=row.params or {},
        created_at=row.created_at,
        finished_at=row.finished_at,
        summary={name: _NAN if last[2] is None else float(last[2]) for name, last in sorted(summary.items())},
        experiment=row.experiment,
        tags=dict(row.tags or {}),
        deleted=row.deleted_at is not None,
    )


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _driver_rows(session: Session, statement: Select[Any]) -> builtins.list[Any]:
    """Run ``statement`` in the session's transaction and return the driver's own tuples.

    This skips SQLAlchemy's Row objects, about a third of the time of reading 100k points.
    Only for columns whose types need no result processing (text, integers, floats).
    Driver errors are wrapped as SQLAlchemy's, so ``Database.run`` translates them as usual.
    """
    connection = session.connection()
    dbapi = connection.dialect.loaded_dbapi
    compiled = statement.compile(dialect=connection.dialect)
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(params[key] for key in compiled.positiontup or ())
    raw = connection.connection
    # psycopg reads binary results faster than text (numbers need no parsing).
    cursor = raw.cursor(binary=True) if connection.dialect.name == "postgresql" else raw.cursor()
    try:
        cursor.execute(compiled.string, params)
        return builtins.list(cursor.fetchall())
    except dbapi.Error as exc:
        raise DBAPIError.instance(compiled.string, params, exc, dbapi.Error) from exc
    finally:
        cursor.close()


def _filtered(query: Select[Any], workspace_id: str, where: RunFilter) -> Select[Any]:
    """``query`` over runs narrowed by ``where``'s job, model and status."""
    if where.status is not None:
        query = query.where(RunRow.status == where.status.value)
    if where.job is not None:
        named = select(JobRow.id).where(JobRow.workspace_id == workspace_id, JobRow.name == where.job)
        query = query.where(or_(RunRow.job_id == where.job, RunRow.job_id.in_(named)))
    if where.model is not None:
        trains = select(JobRow.id).where(
            JobRow.workspace_id == workspace_id, JobRow.spec["model_name"].as_string() == where.model
        )
        registered = (
            select(ModelVersionRow.id)
            .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
            .where(
                ModelRow.workspace_id == workspace_id,
                ModelRow.name == where.model,
                ModelVersionRow.lineage["run_id"].as_string() == RunRow.id,
            )
        )
        query = query.where(or_(RunRow.job_id.in_(trains), registered.exists()))
    return query


def _find(session: Session, workspace_id: str, run_id: str, *, lock: bool = False) -> RunRow:
    query = select(RunRow).where(RunRow.id == run_id, RunRow.workspace_id == workspace_id)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError.of("run", run_id)
    return row


class SqlRunStore(RunStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self, *, workspace_id: str, job_id: str | None, name: str, params: dict[str, Any] | None = None
    ) -> Run:
        params = json_normalize(params or {})

        def tx(session: Session) -> Run:
            if job_id is not None:
                query = select(JobRow.id).where(JobRow.id == job_id, JobRow.workspace_id == workspace_id)
                if session.scalar(query) is None:
                    raise NotFoundError.of("job", job_id)
            row = RunRow(
                id=ids.new_id(RUN_PREFIX),
                workspace_id=workspace_id,
                job_id=job_id,
                name=name,
                status=RunStatus.RUNNING.value,
                params=params,
                summary={},
                created_at=ids.utcnow(),
            )
            session.add(row)
            session.flush()
            return _entity(row)

        return self._db.run(tx, missing=lambda: NotFoundError.of("workspace", workspace_id))

    def get(self, workspace_id: str, run_id: str) -> Run:
        return self._db.run(lambda session: _entity(_find(session, workspace_id, run_id)), write=False)

    def list(
        self,
        workspace_id: str,
        *,
        job_id: str | None = None,
        limit: int = 100,
        where: RunFilter | None = None,
    ) -> builtins.list[Run]:
        where = where or RunFilter()

        def tx(session: Session) -> builtins.list[Run]:
            query = _filtered(select(RunRow).where(RunRow.workspace_id == workspace_id), workspace_id, where)
            if job_id is not None:
                query = query.where(RunRow.job_id == job_id)
            order: builtins.list[Any] = []
            if where.metric is not None:
                # The last value kept in the summary: [step, timestamp, value].
                last = RunRow.summary[(where.metric, 2)].as_float()
                order += [last.is_(None), last.desc() if where.descending else last.asc()]
            order += [RunRow.created_at.desc(), RunRow.id.desc()]
            query = query.order_by(*order).offset(where.offset).limit(limit)
            return [_entity(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

    def log_params(self, workspace_id: str, run_id: str, params: dict[str, Any]) -> Run:
        params = json_normalize(params)

        def tx(session: Session) -> Run:
            row = _find(session, workspace_id, run_id, lock=True)
            row.params = {**(row.params or {}), **params}
            session.flush()
            return _entity(row)

        return self._db.run(tx)

    def log_metrics(self, workspace_id: str, run_id: str, points: builtins.list[MetricPoint]) -> int:
        rows: builtins.list[dict[str, Any]] = [
            {
                "run_id": run_id,
                "name": point.name,
                "step": int(point.step),
                "value": _finite(point.value),
                "timestamp": float(point.timestamp),
            }
            for point in points
        ]

        def tx(session: Session) -> int:
            run = _find(session, workspace_id, run_id, lock=True)
            if not rows:
                return 0
            session.execute(insert(_METRICS), rows)
            summary: dict[str, list[Any]] = dict(run.summary or {})
            for point in rows:
                last = summary.get(point["name"])
                if last is None or (point["step"], point["timestamp"]) >= (last[0], last[1]):
                    summary[point["name"]] = [point["step"], point["timestamp"], point["value"]]
            run.summary = summary
            return len(rows)

        return self._db.run(tx)

    def _series(self, workspace_id: str, run_id: str, name: str | None) -> builtins.list[Any]:
        """(name, step, value, timestamp) tuples straight from the driver, in series order."""

        def tx(session: Session) -> builtins.list[Any]:
            query = select(RunRow.id).where(RunRow.id == run_id, RunRow.workspace_id == workspace_id)
            if session.scalar(query) is None:
                raise NotFoundError.of("run", run_id)
            c = _METRICS.c
            points = select(c.name, c.step, c.value, c.timestamp).where(c.run_id == run_id)
            if name is not None:
                points = points.where(c.name == name)
            # The covering index's order: one range scan, no sort (see tables.MetricRow).
            rows = _driver_rows(session, points.order_by(c.name, c.step, c.timestamp, c.id))
            if self._db.dialect != "sqlite":
                # Names in code point order on every backend: PostgreSQL's default collation
                # orders them otherwise. A stable sort keeps each series in order.
                rows.sort(key=itemgetter(0))
            return rows

        return self._db.run(tx, write=False)

    def metric_history(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> builtins.list[MetricPoint]:
        return [
            MetricPoint(n, step, _NAN if value is None else value, timestamp)
            for n, step, value, timestamp in self._series(workspace_id, run_id, name)
        ]

    def metric_columns(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> dict[str, dict[str, builtins.list[Any]]]:
        columns: dict[str, dict[str, builtins.list[Any]]] = {}
        for n, group in groupby(self._series(workspace_id, run_id, name), key=itemgetter(0)):
            series = builtins.list(group)
            columns[n] = {
                "steps": builtins.list(map(_STEP, series)),
                "values": builtins.list(map(_VALUE, series)),
                "timestamps": builtins.list(map(_TIMESTAMP, series)),
            }
        return columns

    def finish(self, workspace_id: str, run_id: str, status: RunStatus) -> Run:
        def tx(session: Session) -> Run:
            row = _find(session, workspace_id, run_id, lock=True)
            row.status = RunStatus(status).value
            row.finished_at = ids.utcnow()
            session.flush()
            return _entity(row)

        return self._db.run(tx)
