"""Usage and cost of the workspace's jobs by day, user or job (the report of ``GET /api/v1/usage``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.schemas.usage import UsageBy
from aicloud.server.console.render import ConsoleRoute, page
from aicloud.server.console.session import Viewer
from aicloud.server.deps import State
from aicloud.server.services.usage import workspace_usage

router = APIRouter(route_class=ConsoleRoute)
ROWS = 200


@router.get("/usage")
async def usage_page(
    request: Request,
    principal: Viewer,
    state: State,
    by: UsageBy = UsageBy.DAY,
    since: str | None = Query(default=None, max_length=40),
    until: str | None = Query(default=None, max_length=40),
) -> Response:
    since = since or (datetime.now(UTC).date() - timedelta(days=30)).isoformat()
    report = await run_in_threadpool(workspace_usage, state, principal.workspace.id, by, since, until or None)
    rows = sorted(report.rows, key=lambda r: r.cost, reverse=True) if by is not UsageBy.DAY else report.rows
    peak = max((r.cost for r in rows), default=0.0) or max((r.cpu_hours for r in rows), default=0.0)
    return page(
        request,
        "usage.html",
        title="Usage",
        report=report,
        rows=rows[:ROWS],
        more=len(rows) > ROWS,
        by=by.value,
        since=since,
        until=until or "",
        peak=peak,
        use_cost=any(r.cost for r in rows),
    )
