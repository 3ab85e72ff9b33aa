"""The data the console's pages read that is more than one store call: metric series shaped for
charts, at most :data:`MAX_POINTS` points each, and a page of runs.

These are the console's seams to the store: the issue's data layer (server-side paged, sorted and
filtered runs queries with chosen columns; LTTB downsampling in the store's query) replaces their
bodies without touching the pages.
"""

from __future__ import annotations

from typing import Any

from aicloud.entities import Job, JobKind, JobStatus, Run
from aicloud.store import MetadataStore
from aicloud.store.training import RunFilter

#: A chart never gets more points per series than this (the browser draws them all).
MAX_POINTS = 2000


def thin(steps: list[Any], values: list[Any], limit: int = MAX_POINTS) -> tuple[list[Any], list[Any]]:
    """At most ``limit`` points of a series, evenly spaced by index, first and last kept."""
    n = len(steps)
    if n <= limit:
        return steps, values
    picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [steps[i] for i in picks], [values[i] for i in picks]


def series(
    store: MetadataStore, workspace_id: str, run_id: str, name: str | None = None
) -> dict[str, dict[str, list[Any]]]:
    """``{metric: {"steps": [...], "values": [...]}}`` of a run, each at most MAX_POINTS long."""
    out = {}
    for metric, cols in store.runs.metric_columns(workspace_id, run_id, name).items():
        steps, values = thin(cols["steps"], cols["values"])
        out[metric] = {"steps": steps, "values": values}
    return out


def runs_page(
    store: MetadataStore,
    workspace_id: str,
    *,
    where: RunFilter,
    limit: int,
) -> tuple[list[Run], bool]:
    """One page of runs as ``where`` filters and orders them, and whether another page follows."""
    runs = store.runs.list(workspace_id, limit=limit + 1, where=where)
    return runs[:limit], len(runs) > limit


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
