"""Usage and cost of the workspace's jobs, by job, user or day (viewers may read it)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter

from aicloud.entities import Job
from aicloud.entities.usage import Prices
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.usage import UsageBy, UsageReport
from aicloud.server.deps import State, Viewer
from aicloud.server.usage import parse_bound, summarize

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
    low = parse_bound(since, "since")
    high = parse_bound(until, "until", end=True)
    if low is not None and high is not None and low >= high:
        raise ValidationError.field("until", f"until ({until}) must be after since ({since})")
    ws = principal.workspace.id
    jobs = state.store.jobs.finished_between(ws, low, high)
    have = {j.id for j in jobs}
    parents: dict[str, Job] = {}
    for parent_id in {j.parent_id for j in jobs if j.parent_id and j.parent_id not in have}:
        with contextlib.suppress(NotFoundError):  # a sweep that is gone: its trials stand alone
            parents[parent_id] = state.store.jobs.get(ws, parent_id)
    names = {t.id: t.name for t in state.store.tokens.list(ws)}
    return summarize(
        jobs,
        by=by,
        prices=Prices.of(state.settings),
        parents=parents,
        user_names=names,
        since=low,
        until=high,
    )
