"""Jobs: a filtered, paged list; submit a spec; a job's page with its live log and metric charts
(server-sent events from :func:`job_events`) and a cancel button."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import numpy as np
import pydantic
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aicloud.entities import Job, JobStatus
from aicloud.entities.series import MetricArrays
from aicloud.errors import ValidationError
from aicloud.schemas.jobs import JobCreate
from aicloud.server.console import data
from aicloud.server.console.render import ConsoleRoute, page, redirect
from aicloud.server.console.session import Member, Viewer
from aicloud.server.deps import State
from aicloud.server.services.job_logs import read_log
from aicloud.server.services.names import check_id
from aicloud.server.services.runs import MAX_POINTS, downsampled
from aicloud.server.services.specs import submit_job
from aicloud.server.state import AppState

router = APIRouter(route_class=ConsoleRoute)
#: How often a job page's event stream looks for new log lines and metric points.
POLL_S = 1.0

EXAMPLE_SPEC = {
    "kind": "train",
    "name": "my-job",
    "spec": {"task": "tabular-classification", "dataset": "my-data", "target": "label"},
}


@router.get("/jobs")
async def jobs_list(
    request: Request,
    principal: Viewer,
    state: State,
    status: JobStatus | None = None,
    offset: int = Query(default=0, ge=0, le=100_000),
) -> Response:
    jobs = await run_in_threadpool(
        data.jobs_page, state.store, principal.workspace.id, status=status, offset=offset
    )
    return page(
        request,
        "jobs.html",
        title="Jobs",
        jobs=jobs.items,
        status=status.value if status else "",
        statuses=[s.value for s in JobStatus],
        example=json.dumps(EXAMPLE_SPEC, indent=2),
        **jobs.pager(),
    )


@router.post("/jobs")
def jobs_submit(
    request: Request, principal: Member, state: State, body: str = Form(max_length=200_000)
) -> Response:
    """Submit a job from its JSON body (what ``POST /api/v1/jobs`` takes)."""
    try:
        parsed = JobCreate.model_validate_json(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationError.field(".".join(str(p) for p in first["loc"]) or "body", first["msg"]) from None
    job = submit_job(state, principal, parsed)
    return redirect(f"/jobs/{job.id}", request)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, principal: Viewer, state: State) -> Response:
    job = await run_in_threadpool(state.store.jobs.get, principal.workspace.id, check_id(job_id, "job_id"))
    return page(
        request, "job.html", title=job.name, job=job, spec=json.dumps(job.spec, indent=2, sort_keys=True)
    )


@router.post("/jobs/{job_id}/cancel")
def job_cancel(request: Request, job_id: str, principal: Member, state: State) -> Response:
    state.store.jobs.request_cancel(principal.workspace.id, check_id(job_id, "job_id"))
    state.wake_jobs()
    return redirect(f"/jobs/{job_id}", request)


def _event(kind: str, payload: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class _Follower:
    """What one job page has been sent so far: a log offset and, per metric, how many points."""

    def __init__(self, state: AppState, workspace_id: str, job_id: str) -> None:
        self.state, self.workspace_id, self.job_id = state, workspace_id, job_id
        self.offset = 0
        self.sent: dict[str, int] = {}
        self.status = ""

    def poll(self) -> tuple[list[bytes], bool]:
        """The events since the last poll, and whether the job has ended and everything was sent."""
        job = self.state.store.jobs.get(self.workspace_id, self.job_id)
        events = []
        if job.status.value != self.status:
            self.status = job.status.value
            times = {"started": _epoch(job.started_at), "finished": _epoch(job.finished_at)}
            events.append(
                _event(
                    "status", {"status": self.status, "reason": job.reason, "message": job.message, **times}
                )
            )
        chunk, complete = read_log(self.state, job, self.offset)
        if chunk:
            self.offset += len(chunk)
            events.append(_event("log", chunk.decode("utf-8", "replace")))
        metrics = self._metrics(job)
        if metrics:
            events.append(_event("metrics", metrics))
        return events, job.status.terminal and complete and not chunk

    def _metrics(self, job: Job) -> dict[str, Any]:
        """The first time every series (cut to MAX_POINTS by LTTB); then only the points logged
        since. The run's per-metric counts (one small query) say which series to read at all."""
        if job.run_id is None:
            return {}
        runs = self.state.store.runs
        grown = [
            m.name
            for m in runs.metric_stats(self.workspace_id, job.run_id)
            if m.count > self.sent.get(m.name, 0)
        ]
        if not grown:
            return {}
        series = runs.metric_arrays(self.workspace_id, job.run_id, grown)
        fresh = {name: s for name, s in series.items() if name not in self.sent}
        out = {}
        for name, arrays in downsampled(fresh, MAX_POINTS).items():
            out[name] = {**_points(arrays), "reset": True}
            self.sent[name] = len(series[name])
        for name, arrays in series.items():
            seen = self.sent[name]
            if name not in fresh and seen < len(arrays):
                out[name] = {**_points(arrays.take(np.arange(seen, len(arrays)))), "reset": False}
                self.sent[name] = len(arrays)
        return out


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _points(arrays: MetricArrays) -> dict[str, list[Any]]:
    cols = arrays.columns()
    return {"steps": cols["steps"], "values": cols["values"]}


@router.get("/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str, principal: Viewer, state: State) -> StreamingResponse:
    """Server-sent events: ``status``, ``log`` (new text), ``metrics`` (new points), then ``end``."""
    job = await run_in_threadpool(state.store.jobs.get, principal.workspace.id, check_id(job_id, "job_id"))
    follower = _Follower(state, principal.workspace.id, job.id)

    async def stream() -> AsyncIterator[bytes]:
        while True:
            events, done = await run_in_threadpool(follower.poll)
            for event in events:
                yield event
            if done:
                yield _event("end", {})
                return
            yield b": keep-alive\n\n"
            await asyncio.sleep(POLL_S)
            if await request.is_disconnected():
                return

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
