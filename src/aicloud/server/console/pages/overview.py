"""The overview: counts, running jobs, deployment health, spend today."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import JobStatus
from aicloud.schemas.usage import UsageBy
from aicloud.server.console.render import ConsoleRoute, page
from aicloud.server.console.session import Viewer
from aicloud.server.deps import State
from aicloud.server.services.usage import workspace_usage

router = APIRouter(route_class=ConsoleRoute)


def _overview(state: State, workspace_id: str) -> dict[str, Any]:
    store = state.store
    today = datetime.now(UTC).date().isoformat()
    return {
        "counts": {
            "Datasets": store.datasets.count_datasets(workspace_id),
            "Models": store.models.count_models(workspace_id),
            "Deployments": store.deployments.count(workspace_id),
            "Pending jobs": store.jobs.count(workspace_id, status=JobStatus.PENDING),
        },
        "running": store.jobs.list(workspace_id, status=JobStatus.RUNNING, limit=20),
        "recent": store.jobs.list(workspace_id, limit=8),
        "deployments": store.deployments.list(workspace_id, limit=20),
        "spend": workspace_usage(state, workspace_id, UsageBy.DAY, today, None).total,
    }


@router.get("/")
async def overview(request: Request, principal: Viewer, state: State) -> Response:
    data = await run_in_threadpool(_overview, state, principal.workspace.id)
    return page(request, "overview.html", title="Overview", **data)
