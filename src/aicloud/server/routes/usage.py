"""Usage and cost of the workspace's jobs, by job, user or day (viewers may read it)."""

from __future__ import annotations

from fastapi import APIRouter

from aicloud.schemas.usage import UsageBy, UsageReport
from aicloud.server.deps import State, Viewer
from aicloud.server.services.usage import workspace_usage

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=UsageReport)
def usage_report(
    principal: Viewer,
    state: State,
    by: UsageBy = UsageBy.JOB,
    since: str | None = None,
    until: str | None = None,
) -> UsageReport:
    """CPU-, GPU- and GB-hours and cost of the jobs that ended in ``[since, until)``, grouped
    ``by`` job, user (submitting token) or UTC day, with a total. ``since`` and ``until`` are
    ISO dates or datetimes (UTC unless they say otherwise); a bare ``until`` date includes that day."""
    return workspace_usage(state, principal.workspace.id, by, since, until)
