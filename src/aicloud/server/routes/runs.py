"""Runs: params and metric series of training attempts. Metrics arrive in batches."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from aicloud.entities import MetricPoint, RunStatus
from aicloud.schemas.jobs import (
    MetricsCount,
    MetricSeries,
    MetricsIn,
    MetricsOut,
    ParamsIn,
    RunCreate,
    RunFinish,
    RunOut,
)
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services.names import check_id

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


@router.get("/runs", response_model=list[RunOut])
def runs_list(
    principal: Viewer, state: State, job_id: str | None = None, limit: int = Query(default=100, ge=1, le=1000)
) -> list[RunOut]:
    runs = state.store.runs.list(principal.workspace.id, job_id=job_id, limit=limit)
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
