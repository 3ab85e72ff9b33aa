"""Runs: a table whose param and metric columns the user picks (filtered, sorted and paged on the
server), a run's page with its charts, and the compare page (overlaid curves, a params diff)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import Run, RunStatus
from aicloud.entities.series import MetricArrays
from aicloud.errors import ValidationError
from aicloud.schemas.jobs import RunOrder
from aicloud.server.console.render import ConsoleRoute, page
from aicloud.server.console.session import Viewer
from aicloud.server.deps import State
from aicloud.server.services.names import check_id
from aicloud.server.services.runs import MAX_COMPARE, MAX_POINTS, compare, run_filter, run_metrics, run_table

router = APIRouter(route_class=ConsoleRoute)
PAGE = 50
DEFAULT_COLUMNS = 4
_NAME = re.compile(r"[A-Za-z0-9_./:-]{1,200}")


def _names(values: list[str], what: str) -> list[str]:
    bad = [v for v in values if not _NAME.fullmatch(v)]
    if bad:
        raise ValidationError.field(
            what, f"{bad[0][:80]!r} is not a {what} name (letters, digits, _ . / : -)"
        )
    return list(dict.fromkeys(values))[:20]


def _columns(runs: list[Run], params: list[str], metrics: list[str]) -> dict[str, Any]:
    """The columns shown (the user's picks, or the first few of the page) and those on offer."""
    all_params = sorted({k for r in runs for k in r.params})
    all_metrics = sorted({k for r in runs for k in r.summary})
    return {
        "params": params or all_params[:DEFAULT_COLUMNS],
        "metrics": metrics or all_metrics[:DEFAULT_COLUMNS],
        "all_params": sorted(set(all_params) | set(params)),
        "all_metrics": sorted(set(all_metrics) | set(metrics)),
    }


@router.get("/runs")
async def runs_list(
    request: Request,
    principal: Viewer,
    state: State,
    status: RunStatus | None = None,
    job: str | None = Query(default=None, max_length=255),
    model: str | None = Query(default=None, max_length=255),
    name: str | None = Query(default=None, max_length=200),
    filter: str | None = Query(default=None, max_length=2000, description="e.g. metrics.loss < 0.5"),
    sort: str | None = Query(default=None, max_length=210, description="metrics.<name>, params.<name>"),
    order: RunOrder = "best",
    p: list[str] = Query(default=[], description="param columns"),
    m: list[str] = Query(default=[], description="metric columns"),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> Response:
    """The runs table: filtered, sorted and paged in the database (``server.services.runs``); the
    columns are the picked params and metrics (or the first few of the page)."""
    params, metrics = _names(p, "param"), _names(m, "metric")
    where = run_filter(
        job=job or None,
        model=model or None,
        status=status,
        name=name,
        filter=filter or None,
        sort=sort or None,
        order=order,
        offset=offset,
    )
    table = await run_in_threadpool(
        run_table, state.store.runs, principal.workspace.id, where=where, limit=PAGE
    )
    return page(
        request,
        "runs.html",
        title="Runs",
        runs=table.runs,
        total=table.total,
        columns=_columns(table.runs, params, metrics),
        filters={
            "status": status.value if status else "",
            "job": job or "",
            "model": model or "",
            "name": name or "",
            "filter": filter or "",
        },
        statuses=[s.value for s in RunStatus],
        sort=sort or "",
        order=order,
        offset=offset,
        limit=PAGE,
        has_next=offset + len(table.runs) < table.total,
        max_compare=MAX_COMPARE,
    )


def _chart_series(series: dict[str, MetricArrays]) -> dict[str, dict[str, list[Any]]]:
    out = {}
    for name, arrays in series.items():
        cols = arrays.columns()
        out[name] = {"steps": cols["steps"], "values": cols["values"]}
    return out


@router.get("/runs/compare")
async def runs_compare(
    request: Request, principal: Viewer, state: State, id: list[str] = Query(default=[])
) -> Response:
    """Up to 10 runs: one chart per metric with a curve per run (each cut to 2,000 points by LTTB),
    and their params side by side, the differing ones marked."""
    ids = [check_id(i, "id") for i in dict.fromkeys(id)]
    cmp = await run_in_threadpool(
        compare, state.store.runs, principal.workspace.id, ids, max_points=MAX_POINTS
    )
    per_run = {run_id: _chart_series(series) for run_id, series in cmp.series.items()}
    charts = {
        name: {
            "series": [
                {"label": f"{r.name} · {r.id[-6:]}", **per_run[r.id][name]}
                for r in cmp.runs
                if name in per_run[r.id]
            ]
        }
        for name in sorted({n for s in per_run.values() for n in s})
    }
    differ = set(cmp.params_differ)
    keys = sorted({k for r in cmp.runs for k in r.params})
    diff = [{"key": k, "values": [r.params.get(k) for r in cmp.runs], "differs": k in differ} for k in keys]
    return page(request, "compare.html", title="Compare runs", runs=cmp.runs, charts=charts, diff=diff)


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, principal: Viewer, state: State) -> Response:
    ws = principal.workspace.id
    run = await run_in_threadpool(state.store.runs.get, ws, check_id(run_id, "run_id"))
    metrics = await run_in_threadpool(run_metrics, state.store.runs, ws, run.id, max_points=MAX_POINTS)
    charts = {name: {"series": [{"label": name, **s}]} for name, s in _chart_series(metrics.series).items()}
    return page(request, "run.html", title=run.name, run=run, charts=charts)
