"""Jobs: submit, list, inspect, cancel, read logs (live while running, from the blob after), and
keep a job's latest checkpoint (written by the job itself with its job token, read by its next attempt)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from aicloud.entities import JobKind, JobStatus
from aicloud.errors import ConflictError, NotFoundError
from aicloud.schemas.jobs import JobCreate, JobOut
from aicloud.schemas.training import CheckpointOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._paging import DEFAULT_LIMIT, Limit, Offset, set_total
from aicloud.server.routes._streaming import blob_response
from aicloud.server.routes._uploads import receive_upload
from aicloud.server.services.job_logs import MAX_LOG_READ, read_log
from aicloud.server.services.names import check_id
from aicloud.server.services.specs import submit_job

router = APIRouter(tags=["jobs"])


@router.post("/jobs", response_model=JobOut, status_code=201)
def jobs_create(body: JobCreate, principal: Member, state: State) -> JobOut:
    """Queue a job (``train`` or ``command``); it starts when a slot is free."""
    return JobOut.model_validate(submit_job(state, principal, body))


@router.get("/jobs", response_model=list[JobOut])
def jobs_list(
    principal: Viewer,
    state: State,
    response: Response,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> list[JobOut]:
    """Jobs, newest first, of a status or kind (``sweep``: the sweeps), ``limit`` after ``offset``;
    ``X-Total-Count`` says how many match in all."""
    ws = principal.workspace.id
    set_total(response, state.store.jobs.count(ws, status=status, kind=kind))
    jobs = state.store.jobs.list(ws, status=status, kind=kind, offset=offset, limit=limit)
    return [JobOut.model_validate(j) for j in jobs]


@router.get("/jobs/{job_id}", response_model=JobOut)
def jobs_get(job_id: str, principal: Viewer, state: State) -> JobOut:
    return JobOut.model_validate(state.store.jobs.get(principal.workspace.id, check_id(job_id, "job_id")))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def jobs_cancel(job_id: str, principal: Member, state: State) -> JobOut:
    """Ask a job to stop: a pending job is cancelled at once, a running one gets SIGTERM, then SIGKILL."""
    job = state.store.jobs.request_cancel(principal.workspace.id, check_id(job_id, "job_id"))
    state.wake_jobs()
    return JobOut.model_validate(job)


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
async def jobs_logs(
    job_id: str, principal: Viewer, state: State, offset: int = Query(default=0, ge=0)
) -> PlainTextResponse:
    """Log text from byte ``offset``. Poll with the returned ``X-Aicloud-Log-Offset`` to follow;
    ``X-Aicloud-Log-Complete: 1`` means the job has ended and everything was sent."""
    job = await run_in_threadpool(state.store.jobs.get, principal.workspace.id, check_id(job_id, "job_id"))
    data, complete = await run_in_threadpool(read_log, state, job, offset)
    complete = complete and len(data) < MAX_LOG_READ
    headers = {
        "X-Aicloud-Log-Offset": str(offset + len(data)),
        "X-Aicloud-Log-Complete": "1" if complete else "0",
    }
    return PlainTextResponse(data.decode("utf-8", "replace"), headers=headers)


@router.put("/jobs/{job_id}/checkpoint", response_model=CheckpointOut)
async def jobs_put_checkpoint(
    job_id: str,
    request: Request,
    principal: Member,
    state: State,
    epoch: int | None = Query(default=None, ge=0),
    step: int | None = Query(default=None, ge=0),
) -> CheckpointOut:
    """Store the body (a checkpoint file) as the job's latest checkpoint.

    Called by the job itself (its token may only write its own job). The blob stays owned by the
    workspace; ``Job.checkpoint`` records its digest, epoch, step and the attempt that wrote it.
    """
    jid = check_id(job_id, "job_id")
    principal.require_job(jid)
    job = await run_in_threadpool(state.store.jobs.get, principal.workspace.id, jid)
    if job.status.terminal:
        raise ConflictError(
            f"job {jid} has ended ({job.status.value}); it takes no more checkpoints",
            details={"status": job.status.value},
        )
    upload = await receive_upload(
        request, state.blobs, state.settings.max_upload_bytes, filename="checkpoint.safetensors"
    )
    record = CheckpointOut(
        digest=upload.blob.digest,
        size=upload.blob.size,
        epoch=epoch,
        step=step,
        attempt=job.attempt,
        created_at=datetime.now(UTC).isoformat(),
    )
    # the job store references the checkpoint's blob (BlobOwner.JOB_CHECKPOINT) in the update
    checkpoint = record.model_dump()
    await run_in_threadpool(
        state.keep_blob, upload.blob.digest, lambda: state.store.jobs.update(jid, checkpoint=checkpoint)
    )
    return record


@router.get("/jobs/{job_id}/checkpoint", response_class=StreamingResponse)
def jobs_get_checkpoint(job_id: str, principal: Viewer, state: State) -> StreamingResponse:
    """The job's latest checkpoint file (404 when it has none). Its record is in the
    ``X-Aicloud-Checkpoint`` header (JSON) and in ``GET /jobs/{id}``."""
    jid = check_id(job_id, "job_id")
    principal.require_job(jid)
    job = state.store.jobs.get(principal.workspace.id, jid)
    digest = (job.checkpoint or {}).get("digest")
    if not digest:
        raise NotFoundError(f"job {jid} has no checkpoint yet", details={"kind": "checkpoint", "job": jid})
    response = blob_response(state.blobs, digest, state.blobs.size(digest), filename="checkpoint.safetensors")
    response.headers["X-Aicloud-Checkpoint"] = json.dumps(job.checkpoint)
    return response
