"""Reading a job's log: the live file while it runs, the encrypted blob once it has ended
(``GET /jobs/{id}/logs`` and the console's live job page)."""

from __future__ import annotations

from datetime import UTC, datetime

from aicloud.entities import Job
from aicloud.server.state import AppState

MAX_LOG_READ = 1024 * 1024


def read_log(state: AppState, job: Job, offset: int) -> tuple[bytes, bool]:
    """Up to 1 MiB of the job's log from ``offset``; and whether the log is complete.

    A finished job's log is an encrypted blob. Until it is stored (a moment after the job
    ends) the live file is read and the log is not yet complete.
    """
    if job.log_digest:
        with state.blobs.open(job.log_digest) as f:
            f.seek(offset)
            return f.read(MAX_LOG_READ), True
    if state.jobs is not None and job.handle:
        chunk = state.jobs.read_log(job, offset, MAX_LOG_READ)
        # the wrap-up that stores the log normally follows within a moment; if the control
        # plane died in between, give up waiting for it after a while
        stale = job.finished_at is not None and (datetime.now(UTC) - job.finished_at).total_seconds() > 30
        return chunk.data, stale and not chunk.data
    # a job that ended without ever starting (cancelled while pending, launch failure) has no log
    return b"", job.status.terminal and not job.handle
