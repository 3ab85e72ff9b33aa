"""Runs: a table whose param and metric columns the user picks (filtered, sorted and paged on the
server), a run's page with its charts, and the compare page (overlaid curves, a params diff)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import Run, RunStatus
from aicloud.errors import ValidationError
from aicloud.schemas.jobs import RunOrder, metric_goal
from aicloud.server.console import data
from aicloud.server.console.render import ConsoleRoute, page
from aicloud.server.console.session import Viewer
from aicloud.server.deps import State
from aicloud.server.services.names import check_id
from aicloud.store.training import RunFilter

router = APIRouter(route_class=ConsoleRoute)
PAGE = 50
MAX_COMPARE = 10
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
    sort: str | None = Query(default=None, max_length=200, description="a metric to order by"),
    order: RunOrder = "best",
    p: list[str] = Query(default=[], description="param columns"),
    m: list[str] = Query(default=[], description="metric columns"),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> Response:
    params, metrics = _names(p, "param"), _names(m, "metric")
    if sort is not None:
        _names([sort], "metric")
    descending = order == "desc" or (order == "best" and sort is not None and metric_goal(sort) == "max")
    where = RunFilter(
        job=job or None, model=model or None, status=status, metric=sort, descending=descending, offset=offset
    )
    runs, more = await run_in_threadpool(
        data.runs_page, state.store, principal.workspace.id, where=where, limit=PAGE
    )
    return page(
        request,
        "runs.html",
        title="Runs",
        runs=runs,
        columns=_columns(runs, params, metrics),
        filters={"status": status.value if status else "", "job": job or "", "model": model or ""},
        statuses=[s.value for s in RunStatus],
        sort=sort or "",
        order=order,
        offset=offset,
        limit=PAGE,
        has_next=more,
        max_compare=MAX_COMPARE,
    )


def _run_view(state: State, workspace_id: str, run_id: str) -> dict[str, Any]:
    run = state.store.runs.get(workspace_id, check_id(run_id, "run_id"))
    return {"run": run, "series": data.series(state.store, workspace_id, run.id)}


@router.get("/runs/compare")
async def runs_compare(
    request: Request, principal: Viewer, state: State, id: list[str] = Query(default=[])
) -> Response:
    """Up to 10 runs: one chart per metric with a curve per run, and their params side by side."""
    ids = list(dict.fromkeys(id))
    if not 1 <= len(ids) <= MAX_COMPARE:
        raise ValidationError.field(
            "id", f"pick between 1 and {MAX_COMPARE} runs to compare (got {len(ids)})"
        )
    views = [await run_in_threadpool(_run_view, state, principal.workspace.id, i) for i in ids]
    runs = [v["run"] for v in views]
    metric_names = sorted({name for v in views for name in v["series"]})
    charts = {
        name: {
            "series": [
                {"label": f"{v['run'].name} · {v['run'].id[-6:]}", **v["series"][name]}
                for v in views
                if name in v["series"]
            ]
        }
        for name in metric_names
    }
    keys = sorted({k for r in runs for k in r.params})
    diff = [
        {
            "key": k,
            "values": [r.params.get(k) for r in runs],
            "differs": len({repr(r.params.get(k)) for r in runs}) > 1,
        }
        for k in keys
    ]
    return page(request, "compare.html", title="Compare runs", runs=runs, charts=charts, diff=diff)


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, principal: Viewer, state: State) -> Response:
    view = await run_in_threadpool(_run_view, state, principal.workspace.id, run_id)
    charts = {name: {"series": [{"label": name, **s}]} for name, s in view["series"].items()}
    return page(request, "run.html", title=view["run"].name, run=view["run"], charts=charts)
