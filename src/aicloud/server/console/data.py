"""Pages of lists the store cannot page yet: jobs (no offset in ``JobStore.list``) and sweeps (no
filter by kind). Runs, their series (LTTB) and compare come from ``server.services.runs``.

These are the console's seams to the store: a keyset query there replaces their bodies without
touching the pages.
"""

from __future__ import annotations

from aicloud.entities import Job, JobKind, JobStatus
from aicloud.store import MetadataStore


def jobs_page(
    store: MetadataStore, workspace_id: str, *, status: JobStatus | None, offset: int, limit: int
) -> tuple[list[Job], bool]:
    """One page of jobs, newest first. The job store has no offset yet: this reads ``offset + limit``
    rows and keeps the last ``limit`` (a keyset query belongs in the store)."""
    jobs = store.jobs.list(workspace_id, status=status, limit=offset + limit + 1)
    return jobs[offset : offset + limit], len(jobs) > offset + limit


#: The job store has no filter by kind yet: sweeps are looked for among this many newest jobs.
SWEEP_SCAN = 2000


def sweeps_page(
    store: MetadataStore, workspace_id: str, *, offset: int, limit: int
) -> tuple[list[Job], bool]:
    """One page of sweep jobs, newest first (among the newest :data:`SWEEP_SCAN` jobs)."""
    sweeps = [j for j in store.jobs.list(workspace_id, limit=SWEEP_SCAN) if j.kind is JobKind.SWEEP]
    return sweeps[offset : offset + limit], len(sweeps) > offset + limit
