"""Runs: params and metric series of training attempts. Metrics arrive in batches."""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import MetricPoint, RunStatus
from aicloud.errors import ValidationError
from aicloud.schemas.jobs import (
    MetricsCount,
    MetricsIn,
    MetricsOut,
    ParamsIn,
    RunCompareOut,
    RunCreate,
    RunFinish,
    RunOrder,
    RunOut,
)
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services import runs as run_views
from aicloud.server.services.names import check_id
from aicloud.server.services.run_filters import Columns

router = APIRouter(tags=["runs"])


@router.post("/runs", response_model=RunOut, status_code=201)
def runs_create(body: RunCreate, principal: Member, state: State) -> RunOut:
    job_id = body.job_id or principal.job_id
    principal.require_job(job_id)
    if job_id is not None:
        state.store.jobs.get(principal.workspace.id, check_id(job_id, "job_id"))
    run = state.store.runs.create(
        workspace_id=principal.workspace.id, job_id=job_id, name=body.name, params=body.params
    )
    return RunOut.model_validate(run)


_METRIC_NAME = re.compile(r"[A-Za-z0-9_./:-]{1,200}")


@router.get("/runs", response_model=list[RunOut])
def runs_list(
    principal: Viewer,
    state: State,
    job_id: str | None = None,
    job: str | None = Query(default=None, max_length=255, description="a job id or a job name"),
    model: str | None = Query(
        default=None, max_length=255, description="runs that train this model or registered a version of it"
    ),
    status: RunStatus | None = None,
    name: str | None = Query(default=None, max_length=200, description="runs whose name contains this"),
    experiment: str | None = Query(
        default=None, max_length=255, description="the runs of this experiment (docs/mlflow.md)"
    ),
    filter: str | None = Query(
        default=None,
        max_length=4000,
        description="comparisons joined by 'and': metrics.<name> <op> <number> (< <= > >= = !=), "
        "params.<name> = <value> or != <value>; e.g. metrics.val_loss < 0.5 and params.opt = 'adam'",
    ),
    columns: str | None = Query(
        default=None,
        max_length=4000,
        description="the params and metrics each run carries, e.g. params.lr,metrics.val_loss "
        "(a metric's last value); without it, all of them",
    ),
    sort: str | None = Query(
        default=None, max_length=220, description="metrics.<name>, params.<name> or created_at (the default)"
    ),
    metric: str | None = Query(
        default=None, max_length=200, description="order by this metric's last value: sort=metrics.<metric>"
    ),
    order: RunOrder = Query(
        default="best", description="best first (by the metric's name; newest for created_at), asc or desc"
    ),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> Response:
    """Runs, newest first or as ``sort`` orders them, filtered and paged in the database; the
    ``X-Total-Count`` header says how many match in all. Runs without the sort's metric or
    param come last."""
    if metric is not None and not _METRIC_NAME.fullmatch(metric):
        raise ValidationError.field(
            "metric", "sorting works on metric names of letters, digits and _ . / : - only; list without it"
        )
    if job_id is not None:
        check_id(job_id, "job_id")
    where = run_views.run_filter(
        job=job,
        model=model,
        status=status,
        name=name,
        filter=filter,
        sort=sort or (f"metrics.{metric}" if metric else None),
        order=order,
        offset=offset,
        experiment=experiment,
    )
    picked = Columns.parse(columns) if columns is not None else None
    table = run_views.run_table(
        state.store.runs, principal.workspace.id, where=where, limit=limit, columns=picked, job_id=job_id
    )
    return _json(run_views.runs_json(table.runs), {"X-Total-Count": str(table.total)})


def _json(body: bytes, headers: dict[str, str] | None = None) -> Response:
    """A response already encoded by its pydantic model: FastAPI's own path (to Python objects,
    then to JSON) takes about 7 times as long for 100,000 points (``bench/console.py``)."""
    return Response(content=body, media_type="application/json", headers=headers)


@router.get("/runs/compare", response_model=RunCompareOut)
def runs_compare(
    principal: Viewer,
    state: State,
    ids: str = Query(max_length=2000, description=f"up to {run_views.MAX_COMPARE} run ids, comma-separated"),
    metrics: str | None = Query(
        default=None, max_length=4000, description="metric names, comma-separated (default: all of them)"
    ),
    max_points: int = Query(default=run_views.MAX_POINTS, ge=3, le=100_000),
) -> Response:
    """Runs side by side: their params (and which differ) and their series, each downsampled
    (LTTB) to at most ``max_points`` points."""
    run_ids = [check_id(i.strip(), "ids") for i in ids.split(",") if i.strip()]
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics is not None else None
    view = run_views.compare(
        state.store.runs, principal.workspace.id, run_ids, metrics=names, max_points=max_points
    )
    return _json(run_views.compare_json(view))


@router.get("/runs/{run_id}", response_model=RunOut)
def runs_get(run_id: str, principal: Viewer, state: State) -> RunOut:
    return RunOut.model_validate(state.store.runs.get(principal.workspace.id, check_id(run_id, "run_id")))


def _writable_run(run_id: str, principal: Member, state: State) -> str:
    run = state.store.runs.get(principal.workspace.id, check_id(run_id, "run_id"))
    principal.require_job(run.job_id)
    return run.id


@router.post("/runs/{run_id}/params", response_model=RunOut)
def runs_log_params(run_id: str, body: ParamsIn, principal: Member, state: State) -> RunOut:
    rid = _writable_run(run_id, principal, state)
    return RunOut.model_validate(state.store.runs.log_params(principal.workspace.id, rid, body.params))


@router.post("/runs/{run_id}/metrics", response_model=MetricsCount)
async def runs_log_metrics(run_id: str, body: MetricsIn, principal: Member, state: State) -> MetricsCount:
    """Append a batch of metric points (up to 10,000) in one transaction."""
    rid = await run_in_threadpool(_writable_run, run_id, principal, state)
    now = time.time()
    points = [MetricPoint(p.name, p.step, p.value, p.timestamp or now) for p in body.points]
    count = await run_in_threadpool(state.store.runs.log_metrics, principal.workspace.id, rid, points)
    return MetricsCount(count=count)


@router.get("/runs/{run_id}/metrics", response_model=MetricsOut)
def runs_metrics(
    run_id: str,
    principal: Viewer,
    state: State,
    name: list[str] | None = Query(default=None, description="these metrics only (repeat for several)"),
    max_points: int | None = Query(
        default=None,
        ge=3,
        le=1_000_000,
        description="downsample each series (LTTB) to at most this many points",
    ),
    limit: int | None = Query(
        default=None, ge=1, le=1000, description="a page of the run's metrics, by name"
    ),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> Response:
    """Metric series, columnar: ``{name: {steps, values, timestamps}}``; every point unless
    ``max_points`` says otherwise. With ``limit`` or ``offset``, ``total`` counts the metrics."""
    page = run_views.run_metrics(
        state.store.runs,
        principal.workspace.id,
        check_id(run_id, "run_id"),
        names=name,
        max_points=max_points,
        offset=offset,
        limit=limit,
    )
    return _json(run_views.metrics_json(page, paged=limit is not None or offset > 0))


@router.post("/runs/{run_id}/finish", response_model=RunOut)
def runs_finish(run_id: str, body: RunFinish, principal: Member, state: State) -> RunOut:
    rid = _writable_run(run_id, principal, state)
    return RunOut.model_validate(state.store.runs.finish(principal.workspace.id, rid, RunStatus(body.status)))
