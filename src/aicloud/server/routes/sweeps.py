"""Sweeps: the trials table of a ``sweep`` job (submitted, listed and cancelled as any job)."""

from __future__ import annotations

from fastapi import APIRouter

from aicloud.schemas.sweeps import SweepTrialsOut
from aicloud.server.deps import State, Viewer
from aicloud.server.services.names import check_id
from aicloud.server.services.sweeps import trials_table

router = APIRouter(tags=["sweeps"])


@router.get("/jobs/{job_id}/trials", response_model=SweepTrialsOut)
def sweeps_trials(job_id: str, principal: Viewer, state: State) -> SweepTrialsOut:
    """The sweep's trials (number, job, state incl. ``pruned``, params, per-epoch and final objective,
    epochs) and the best one so far. 422 for a job that is not a sweep."""
    sweep = state.store.jobs.get(principal.workspace.id, check_id(job_id, "job_id"))
    return trials_table(state, sweep)
