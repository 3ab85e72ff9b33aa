"""Sweeps: the sweep jobs (trials of a task or of a command), and a sweep's trials table with a
scatter of a param against the objective and each trial's per-epoch curve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import JobKind
from aicloud.errors import NotFoundError
from aicloud.schemas.sweeps import SweepTrialsOut
from aicloud.server.console import data
from aicloud.server.console.render import ConsoleRoute, page
from aicloud.server.console.session import Viewer
from aicloud.server.deps import State
from aicloud.server.services.names import check_id
from aicloud.server.services.sweeps import trials_table

router = APIRouter(route_class=ConsoleRoute)


@router.get("/sweeps")
async def sweeps_list(
    request: Request, principal: Viewer, state: State, offset: int = Query(default=0, ge=0, le=100_000)
) -> Response:
    sweeps = await run_in_threadpool(data.sweeps_page, state.store, principal.workspace.id, offset=offset)
    return page(request, "sweeps.html", title="Sweeps", sweeps=sweeps.items, **sweeps.pager())


def _charts(table: SweepTrialsOut, param: str | None) -> dict[str, Any]:
    numeric = sorted(
        {
            k
            for t in table.trials
            for k, v in t.params.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    chosen = param if param in numeric else (numeric[0] if numeric else None)
    points = (
        sorted(
            (t.params[chosen], t.value) for t in table.trials if chosen in t.params and t.value is not None
        )
        if chosen
        else []
    )
    scatter = {
        "scatter": True,
        "xlabel": chosen,
        "series": [
            {"label": table.metric, "steps": [p[0] for p in points], "values": [p[1] for p in points]}
        ],
    }
    curves = {
        "series": [
            {
                "label": f"trial {t.number}",
                "steps": [int(e) for e in sorted(t.intermediate, key=int)],
                "values": [t.intermediate[e] for e in sorted(t.intermediate, key=int)],
            }
            for t in table.trials
            if t.intermediate
        ][:20]
    }
    return {"numeric": numeric, "param": chosen, "scatter": scatter, "curves": curves}


@router.get("/sweeps/{job_id}")
async def sweep_page(
    request: Request,
    job_id: str,
    principal: Viewer,
    state: State,
    param: str | None = Query(default=None, max_length=200),
) -> Response:
    sweep = await run_in_threadpool(state.store.jobs.get, principal.workspace.id, check_id(job_id, "job_id"))
    if sweep.kind is not JobKind.SWEEP:
        raise NotFoundError(f"job {sweep.id} is not a sweep", details={"kind": "sweep", "name": sweep.id})
    table = await run_in_threadpool(trials_table, state, sweep)
    base = sweep.spec.get("command") or sweep.spec.get("train") or {}  # what each trial runs
    return page(
        request,
        "sweep.html",
        title=sweep.name,
        sweep=sweep,
        table=table,
        base=base,
        **_charts(table, param),
    )
