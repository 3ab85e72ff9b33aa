"""Runs: params in a JSON column; each metric a ``run_metrics`` row and packed chunks of points.

``log_metrics`` is one transaction: lock the run row, then for each metric of the batch append
its points to the series' last chunk (a chunk holds ``metric_chunks.CHUNK_POINTS`` points;
a full one is left as it is and a new one started) and fold them into its ``run_metrics`` row:
the last point by (step, timestamp), ties to the point logged last, the min and max of the
finite values, the count. So reading a run's summary, or sorting runs by a metric, never reads
a point, and reading a series reads a few rows per thousand points. A value that is not finite
(NaN, infinity) is stored as NaN: it reads back as NaN in ``metric_history``, ``metric_arrays``
and ``summary``, and as None (JSON null) in ``metric_columns``.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Collection, Mapping, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, bindparam, func, insert, select, tuple_, update
from sqlalchemy.orm import Session, defer

from aicloud.entities import MetricPoint, Run, RunStatus
from aicloud.entities.series import MetricArrays, MetricStats
from aicloud.errors import NotFoundError
from aicloud.store.sql import ids
from aicloud.store.sql import metric_chunks as chunks
from aicloud.store.sql.run_query import filtered, ordered
from aicloud.store.sql.session import Database, json_normalize
from aicloud.store.sql.tables import JobRow, MetricChunkRow, RunMetricRow, RunRow
from aicloud.store.training import RunFilter, RunStore

RUN_PREFIX = "run"

_NAN = math.nan
_CHUNKS = cast(Table, MetricChunkRow.__table__)
_RUN_METRICS = cast(Table, RunMetricRow.__table__)


def _entity(row: RunRow, summary: dict[str, float | None] | None = None) -> Run:
    """The run of ``row``; ``summary`` the last values to show (None: every metric's, from the
    row's ``summary`` column)."""
    if summary is None:
        summary = {name: last[2] for name, last in (row.summary or {}).items()}
    return Run(
        id=row.id,
        workspace_id=row.workspace_id,
        job_id=row.job_id,
        name=row.name,
        status=RunStatus(row.status),
        params=row.params or {},
        created_at=row.created_at,
        finished_at=row.finished_at,
        summary={name: _NAN if value is None else value for name, value in sorted(summary.items())},
        experiment=row.experiment,
        tags=dict(row.tags or {}),
        deleted=row.deleted_at is not None,
    )


def _summaries(
    session: Session, run_ids: builtins.list[str], names: Collection[str] | None
) -> dict[str, dict[str, float | None]]:
    """The last value of each metric (of ``names``, None: all) of each run."""
    out: dict[str, dict[str, float | None]] = {run_id: {} for run_id in run_ids}
    if not run_ids or (names is not None and not names):
        return out
    c = _RUN_METRICS.c
    query = select(c.run_id, c.name, c.last_value).where(c.run_id.in_(run_ids))
    if names is not None:
        query = query.where(c.name.in_(builtins.list(names)))
    for run_id, name, value in session.execute(query):
        out[run_id][name] = value
    return out


def _find(session: Session, workspace_id: str, run_id: str, *, lock: bool = False) -> RunRow:
    query = select(RunRow).where(RunRow.id == run_id, RunRow.workspace_id == workspace_id)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError.of("run", run_id)
    return row


def _last_index(series: MetricArrays) -> int:
    """The index of the series' last point: the greatest (step, timestamp), the one logged last
    among equals."""
    if chunks.is_ordered(series):
        return len(series) - 1
    return int(np.lexsort((series.timestamps, series.steps))[-1])


def _folded(name: str, series: MetricArrays, row: dict[str, Any] | None) -> dict[str, Any]:
    """The ``run_metrics`` values of ``row`` (None: a new metric) after appending ``series``."""
    i = _last_index(series)
    step, timestamp, value = int(series.steps[i]), float(series.timestamps[i]), float(series.values[i])
    finite = series.values[~np.isnan(series.values)]
    low = float(finite.min()) if len(finite) else None
    high = float(finite.max()) if len(finite) else None
    if row is None:
        row = {"name": name, "count": 0, "chunks": 0, "last_step": step, "last_timestamp": timestamp}
        row.update(last_value=None if math.isnan(value) else value, min_value=low, max_value=high)
    else:
        row = dict(row)
        if (step, timestamp) >= (row["last_step"], row["last_timestamp"]):
            row.update(
                last_step=step, last_timestamp=timestamp, last_value=None if math.isnan(value) else value
            )
        if low is not None:
            row["min_value"] = low if row["min_value"] is None else min(row["min_value"], low)
            row["max_value"] = high if row["max_value"] is None else max(row["max_value"], high)
    row["count"] += len(series)
    return row


def _points_by_name(points: builtins.list[MetricPoint]) -> dict[str, MetricArrays]:
    """A batch of points as arrays per metric, each in the order logged."""
    by_name: dict[str, builtins.list[MetricPoint]] = {}
    for point in points:
        by_name.setdefault(point.name, []).append(point)
    return {
        name: MetricArrays.of(
            [int(p.step) for p in group], [float(p.value) for p in group], [float(p.timestamp) for p in group]
        )
        for name, group in by_name.items()
    }


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
            return _entity(row, {})

        return self._db.run(tx, missing=lambda: NotFoundError.of("workspace", workspace_id))

    def _read(self, session: Session, workspace_id: str, run_id: str) -> Run:
        row = _find(session, workspace_id, run_id)
        return _entity(row, _summaries(session, [row.id], None)[row.id])

    def get(self, workspace_id: str, run_id: str) -> Run:
        return self._db.run(lambda session: self._read(session, workspace_id, run_id), write=False)

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
        dialect = self._db.dialect

        def tx(session: Session) -> builtins.list[Run]:
            # The page's ids first: sorting 10,000 ids is cheap, sorting 10,000 whole rows is not.
            query = filtered(select(RunRow.id), dialect, workspace_id, job_id, where)
            ids = builtins.list(session.scalars(ordered(query, dialect, where).limit(limit)))
            # Without the long ``summary`` JSON: the page's last values come from run_metrics.
            rows_query = select(RunRow).options(defer(RunRow.summary)).where(RunRow.id.in_(ids))
            found = {row.id: row for row in session.scalars(rows_query)}
            rows = [found[run_id] for run_id in ids]
            summaries = _summaries(session, [row.id for row in rows], metrics)
            return [_entity(row, summaries[row.id]) for row in rows]

        return self._db.run(tx, write=False)

    def count(self, workspace_id: str, *, job_id: str | None = None, where: RunFilter | None = None) -> int:
        where = where or RunFilter()
        query = filtered(select(func.count(RunRow.id)), self._db.dialect, workspace_id, job_id, where)
        return self._db.run(lambda session: int(session.scalar(query) or 0), write=False)

    def log_params(self, workspace_id: str, run_id: str, params: dict[str, Any]) -> Run:
        params = json_normalize(params)

        def tx(session: Session) -> Run:
            row = _find(session, workspace_id, run_id, lock=True)
            row.params = {**(row.params or {}), **params}
            session.flush()
            return self._read(session, workspace_id, run_id)

        return self._db.run(tx)

    def log_metrics(self, workspace_id: str, run_id: str, points: builtins.list[MetricPoint]) -> int:
        return self.log_metric_arrays(workspace_id, run_id, _points_by_name(points))

    def log_metric_arrays(self, workspace_id: str, run_id: str, series: Mapping[str, MetricArrays]) -> int:
        series = {
            name: MetricArrays.of(s.steps, s.values, s.timestamps) for name, s in series.items() if len(s)
        }

        def tx(session: Session) -> int:
            run = _find(session, workspace_id, run_id, lock=True)
            if not series:
                return 0
            return _append(session, run, series)

        return self._db.run(tx)

    def metric_arrays(
        self, workspace_id: str, run_id: str, names: Collection[str] | None = None
    ) -> dict[str, MetricArrays]:
        return self.metric_arrays_of(workspace_id, [run_id], names)[run_id]

    def metric_arrays_of(
        self, workspace_id: str, run_ids: Sequence[str], names: Collection[str] | None = None
    ) -> dict[str, dict[str, MetricArrays]]:
        run_ids = builtins.list(dict.fromkeys(run_ids))

        def tx(session: Session) -> builtins.list[Any]:
            found = set(
                session.scalars(
                    select(RunRow.id).where(RunRow.id.in_(run_ids), RunRow.workspace_id == workspace_id)
                )
            )
            for run_id in run_ids:
                if run_id not in found:
                    raise NotFoundError.of("run", run_id)
            if names is not None and not names:
                return []
            c = _CHUNKS.c
            query = select(c.run_id, c.name, c.data).where(c.run_id.in_(run_ids))
            if names is not None:
                query = query.where(c.name.in_(builtins.list(names)))
            return builtins.list(session.execute(query.order_by(c.run_id, c.name, c.seq)))

        rows = self._db.run(tx, write=False)
        out: dict[str, dict[str, MetricArrays]] = {run_id: {} for run_id in run_ids}
        for (run_id, name), group in groupby(rows, key=itemgetter(0, 1)):
            parts = [chunks.unpack(data) for _, _, data in group]
            out[run_id][name] = chunks.in_series_order(chunks.concat(parts))
        # Names in code point order on every backend (PostgreSQL's collation orders them otherwise).
        return {run_id: {name: series[name] for name in sorted(series)} for run_id, series in out.items()}

    def metric_history(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> builtins.list[MetricPoint]:
        names = None if name is None else [name]
        return [
            MetricPoint(n, step, value, timestamp)
            for n, s in self.metric_arrays(workspace_id, run_id, names).items()
            for step, value, timestamp in zip(
                s.steps.tolist(), s.values.tolist(), s.timestamps.tolist(), strict=True
            )
        ]

    def metric_columns(
        self, workspace_id: str, run_id: str, name: str | None = None
    ) -> dict[str, dict[str, builtins.list[Any]]]:
        names = None if name is None else [name]
        return {n: s.columns() for n, s in self.metric_arrays(workspace_id, run_id, names).items()}

    def metric_stats(
        self, workspace_id: str, run_id: str, names: Collection[str] | None = None
    ) -> builtins.list[MetricStats]:
        def tx(session: Session) -> builtins.list[MetricStats]:
            _find(session, workspace_id, run_id)
            query = select(RunMetricRow).where(RunMetricRow.run_id == run_id)
            if names is not None:
                query = query.where(RunMetricRow.name.in_(builtins.list(names)))
            return [
                MetricStats(
                    name=row.name,
                    count=row.count,
                    last_step=row.last_step,
                    last_timestamp=row.last_timestamp,
                    last_value=_NAN if row.last_value is None else row.last_value,
                    min_value=row.min_value,
                    max_value=row.max_value,
                )
                for row in session.scalars(query)
            ]

        return sorted(self._db.run(tx, write=False), key=lambda stats: stats.name)

    def finish(self, workspace_id: str, run_id: str, status: RunStatus) -> Run:
        def tx(session: Session) -> Run:
            row = _find(session, workspace_id, run_id, lock=True)
            row.status = RunStatus(status).value
            row.finished_at = ids.utcnow()
            session.flush()
            return self._read(session, workspace_id, run_id)

        return self._db.run(tx)


def _append(session: Session, run: RunRow, series: dict[str, MetricArrays]) -> int:
    """Append ``series`` to the run's metrics (the run row is locked by the caller)."""
    run_id = run.id
    m, k = _RUN_METRICS.c, _CHUNKS.c
    names = builtins.list(series)
    known: dict[str, dict[str, Any]] = {
        row["name"]: dict(row)
        for row in session.execute(
            select(_RUN_METRICS).where(m.run_id == run_id, m.name.in_(names))
        ).mappings()
    }
    tails_wanted = [(name, row["chunks"] - 1) for name, row in known.items() if row["chunks"] > 0]
    tails: dict[str, Any] = {}
    if tails_wanted:
        query = select(k.name, k.count, k.data).where(
            k.run_id == run_id, tuple_(k.name, k.seq).in_(tails_wanted)
        )
        tails = {name: (count, data) for name, count, data in session.execute(query)}
    new_metrics: builtins.list[dict[str, Any]] = []
    changed_metrics: builtins.list[dict[str, Any]] = []
    new_chunks: builtins.list[dict[str, Any]] = []
    changed_chunks: builtins.list[dict[str, Any]] = []
    for name, arrays in series.items():
        row = _folded(name, arrays, known.get(name))
        seq = row["chunks"]
        tail = tails.get(name)
        if tail is not None and tail[0] < chunks.CHUNK_POINTS:
            # Fill the last chunk first: rewrite it with the new points appended.
            arrays = chunks.concat([chunks.unpack(tail[1]), arrays])
            seq -= 1
        for i, piece in enumerate(chunks.split(arrays)):
            values = {
                "b_run": run_id,
                "b_name": name,
                "b_seq": seq + i,
                "count": len(piece),
                "data": chunks.pack(piece),
            }
            (changed_chunks if seq + i < row["chunks"] else new_chunks).append(values)
        row["chunks"] = max(row["chunks"], seq + len(range(0, len(arrays), chunks.CHUNK_POINTS)))
        (changed_metrics if name in known else new_metrics).append(row)
    if changed_chunks:
        session.execute(
            update(_CHUNKS)
            .where(k.run_id == bindparam("b_run"), k.name == bindparam("b_name"), k.seq == bindparam("b_seq"))
            .values(count=bindparam("count"), data=bindparam("data")),
            changed_chunks,
        )
    if new_metrics:
        session.execute(insert(_RUN_METRICS), [{**row, "run_id": run_id} for row in new_metrics])
    if changed_metrics:
        fields = ("count", "chunks", "last_step", "last_timestamp", "last_value", "min_value", "max_value")
        session.execute(
            update(_RUN_METRICS)
            .where(m.run_id == bindparam("b_run"), m.name == bindparam("b_name"))
            .values({f: bindparam(f) for f in fields}),
            [
                {"b_run": run_id, "b_name": row["name"], **{f: row[f] for f in fields}}
                for row in changed_metrics
            ],
        )
    if new_chunks:
        session.execute(
            insert(_CHUNKS),
            [
                {
                    "run_id": c["b_run"],
                    "name": c["b_name"],
                    "seq": c["b_seq"],
                    "count": c["count"],
                    "data": c["data"],
                }
                for c in new_chunks
            ],
        )
    summary = dict(run.summary or {})
    for row in (*new_metrics, *changed_metrics):
        summary[row["name"]] = [row["last_step"], row["last_timestamp"], row["last_value"]]
    run.summary = summary
    return sum(len(s) for s in series.values())
