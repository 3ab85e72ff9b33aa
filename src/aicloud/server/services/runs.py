"""Runs as tables and charts show them: a page of the runs table (picked columns, filtered and
sorted in the database, with the total), metric series cut down on the server to what a chart
can draw (LTTB, ``entities.series``), and the compare view of up to ``MAX_COMPARE`` runs.

The routes (``server/routes/runs.py``) and the console call these with the caller's workspace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
from pydantic import TypeAdapter

from aicloud.entities import Run, RunStatus
from aicloud.entities.series import MetricArrays, lttb_many
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.jobs import MetricSeries, MetricsOut, RunCompareOut, RunOut, metric_goal
from aicloud.server.services.run_filters import Columns, Sort, check_metric_name, parse_filter
from aicloud.store.training import RunFilter, RunStore

MAX_COMPARE = 10
"""The most runs one compare view shows."""

MAX_POINTS = 2000
"""The most points per series a chart asks for (the console's default)."""


def run_filter(
    *,
    job: str | None = None,
    model: str | None = None,
    status: RunStatus | None = None,
    name: str | None = None,
    filter: str | None = None,
    sort: str | None = None,
    order: str = "best",
    offset: int = 0,
    experiment: str | None = None,
) -> RunFilter:
    """A ``RunFilter`` from a runs table's query (``server.services.run_filters`` has the syntax).

    ``order`` is ``best`` (a metric: highest first for accuracy-like names, lowest otherwise; a
    param: ascending; ``created_at``: newest first), ``asc`` or ``desc``.
    """
    metrics, params = parse_filter(filter) if filter else ((), ())
    key = Sort.parse(sort) if sort else Sort("created_at")
    if order == "best":
        descending = key.kind == "created_at" or (
            key.kind == "metric" and key.name is not None and metric_goal(key.name) == "max"
        )
    else:
        descending = order == "desc"
    return RunFilter(
        job=job,
        model=model,
        status=status,
        name=name or None,
        metrics=metrics,
        params=params,
        metric=key.name if key.kind == "metric" else None,
        param=key.name if key.kind == "param" else None,
        descending=descending,
        oldest_first=key.kind == "created_at" and not descending,
        offset=offset,
        experiment=experiment,
    )


@dataclass(frozen=True)
class RunTable:
    """One page of a runs table and how many runs match in all."""

    total: int
    runs: list[Run]


def run_table(
    store: RunStore,
    workspace_id: str,
    *,
    where: RunFilter,
    limit: int,
    columns: Columns | None = None,
    job_id: str | None = None,
) -> RunTable:
    """The page of runs ``where`` selects; with ``columns``, each run's ``params`` and ``summary``
    hold the picked params and metrics only (without, all of them)."""
    runs = store.list(
        workspace_id,
        job_id=job_id,
        limit=limit,
        where=where,
        metrics=None if columns is None else columns.metrics,
    )
    if columns is not None:
        runs = [replace(r, params={k: r.params[k] for k in columns.params if k in r.params}) for r in runs]
    return RunTable(store.count(workspace_id, job_id=job_id, where=where), runs)


def downsampled(series: dict[str, MetricArrays], max_points: int | None) -> dict[str, MetricArrays]:
    """Each series cut to at most ``max_points`` points by LTTB (None: as they are)."""
    if max_points is None:
        return series
    long = [name for name, s in series.items() if len(s) > max_points]
    if not long:
        return series
    picks = lttb_many([(series[n].steps.astype(np.float64), series[n].values) for n in long], max_points)
    return {**series, **{name: series[name].take(idx) for name, idx in zip(long, picks, strict=True)}}


@dataclass(frozen=True)
class MetricsPage:
    """Some of a run's metric series, and how many metrics the run has (``total``)."""

    total: int
    series: dict[str, MetricArrays]


def run_metrics(
    store: RunStore,
    workspace_id: str,
    run_id: str,
    *,
    names: Iterable[str] | None = None,
    max_points: int | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> MetricsPage:
    """A run's series (of ``names``, or all), names sorted, paged by ``offset`` and ``limit``
    over the names, each downsampled to ``max_points``."""
    wanted = None if names is None else sorted({check_metric_name(n, "name") for n in names})
    if offset or limit is not None:
        known = [s.name for s in store.metric_stats(workspace_id, run_id, wanted)]
        total = len(known)
        wanted = known[offset : None if limit is None else offset + limit]
        series = store.metric_arrays(workspace_id, run_id, wanted) if wanted else {}
    else:
        series = store.metric_arrays(workspace_id, run_id, wanted)
        total = len(series)
    return MetricsPage(total, downsampled(series, max_points))


@dataclass(frozen=True)
class Comparison:
    """Runs side by side: the runs (in the order asked), the params whose values are not all
    the same (or that some runs lack), and each run's series (run id → metric → points)."""

    runs: list[Run]
    params_differ: list[str]
    series: dict[str, dict[str, MetricArrays]]


def compare(
    store: RunStore,
    workspace_id: str,
    run_ids: list[str],
    *,
    metrics: list[str] | None = None,
    max_points: int | None = MAX_POINTS,
) -> Comparison:
    """Up to ``MAX_COMPARE`` runs with their ``metrics`` (None: every metric any of them has)."""
    run_ids = list(dict.fromkeys(run_ids))
    if not run_ids or len(run_ids) > MAX_COMPARE:
        raise ValidationError.field("ids", f"compare 1 to {MAX_COMPARE} runs, not {len(run_ids)}")
    if metrics is not None:
        metrics = [check_metric_name(m, "metrics") for m in dict.fromkeys(metrics)]
    found = {
        r.id: r for r in store.list(workspace_id, limit=len(run_ids), where=RunFilter(ids=tuple(run_ids)))
    }
    missing = [run_id for run_id in run_ids if run_id not in found]
    if missing:
        raise NotFoundError.of("run", missing[0])
    runs = [found[run_id] for run_id in run_ids]
    keys = sorted({k for r in runs for k in r.params})
    differ = [k for k in keys if len({repr(r.params.get(k, _MISSING)) for r in runs}) > 1]
    names = metrics if metrics is not None else sorted({m for r in runs for m in r.summary})
    raw = store.metric_arrays_of(workspace_id, run_ids, names)
    # One LTTB pass over every run's series (the long ones share its loop).
    flat = downsampled({f"{i}\0{n}": s for i, per in raw.items() for n, s in per.items()}, max_points)
    series: dict[str, dict[str, MetricArrays]] = {r.id: {} for r in runs}
    for key, s in flat.items():
        run_id, name = key.split("\0", 1)
        series[run_id][name] = s
    return Comparison(runs, differ, series)


_MISSING = object()


# --- the three views as the API answers them: JSON encoded by the wire models at once ---

_RUN_LIST = TypeAdapter(list[RunOut])


def _series_out(series: dict[str, MetricArrays]) -> dict[str, MetricSeries]:
    # Built unvalidated: the arrays' lists are ints and floats (None for NaN) already.
    out = {}
    for name, s in series.items():
        columns = s.columns()
        out[name] = MetricSeries.model_construct(
            steps=columns["steps"], values=columns["values"], timestamps=columns["timestamps"]
        )
    return out


def runs_json(runs: list[Run]) -> bytes:
    """``GET /runs``'s body: the runs as ``list[RunOut]``."""
    return _RUN_LIST.dump_json([RunOut.model_validate(r) for r in runs])


def metrics_json(page: MetricsPage, *, paged: bool) -> bytes:
    """``GET /runs/{id}/metrics``'s body (``total`` only when the metrics were paged)."""
    out = MetricsOut(metrics=_series_out(page.series), total=page.total if paged else None)
    return out.model_dump_json().encode()


def compare_json(view: Comparison) -> bytes:
    """``GET /runs/compare``'s body."""
    out = RunCompareOut(
        runs=[RunOut.model_validate(r) for r in view.runs],
        params_differ=view.params_differ,
        metrics={run_id: _series_out(series) for run_id, series in view.series.items()},
    )
    return out.model_dump_json().encode()
