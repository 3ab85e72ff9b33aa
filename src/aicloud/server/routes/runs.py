"""Runs: params and metric series of training attempts. Metrics arrive in batches."""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from aicloud.entities import MetricPoint, RunStatus
from aicloud.errors import ValidationError
from aicloud.schemas.jobs import (
    MetricsCount,
    MetricSeries,
    MetricsIn,
    MetricsOut,
    ParamsIn,
    RunCreate,
    RunFinish,
    RunOrder,
    RunOut,
    metric_goal,
)
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services.names import check_id
from aicloud.store.training import RunFilter

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
    metric: str | None = Query(
        default=None, max_length=200, description="order by this metric's last value (runs without it last)"
    ),
    order: RunOrder = Query(default="best", description="with metric: best first, asc or desc"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> list[RunOut]:
    """Runs, newest first or by a metric's last value; the filters and the page apply in the query."""
    if metric is not None and not _METRIC_NAME.fullmatch(metric):
        raise ValidationError.field(
            "metric", "sorting works on metric names of letters, digits and _ . / : - only; list without it"
        )
    descending = order == "desc" or (order == "best" and metric is not None and metric_goal(metric) == "max")
    where = RunFilter(
        job=job, model=model, status=status, metric=metric, descending=descending, offset=offset
    )
    if job_id is not None:
        check_id(job_id, "job_id")
    runs = state.store.runs.list(principal.workspace.id, job_id=job_id, limit=limit, where=where)
    return [RunOut.model_validate(r) for r in runs]


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
def runs_metrics(run_id: str, principal: Viewer, state: State, name: str | None = None) -> MetricsOut:
    """Metric series, columnar: ``{name: {steps, values, timestamps}}``."""
    columns = state.store.runs.metric_columns(principal.workspace.id, check_id(run_id, "run_id"), name)
    return MetricsOut(metrics={k: MetricSeries(**v) for k, v in columns.items()})


@router.post("/runs/{run_id}/finish", response_model=RunOut)
def runs_finish(run_id: str, body: RunFinish, principal: Member, state: State) -> RunOut:
    rid = _writable_run(run_id, principal, state)
    return RunOut.model_validate(state.store.runs.finish(principal.workspace.id, rid, RunStatus(body.status)))
