"""A sweep's trials as the metadata store has them: the one source of truth of a sweep's progress.

A trial is a ``train`` job (a ``command`` job in a sweep over your own code) whose ``parent_id`` is
the sweep and whose name ends in ``-trial-<number>``.
Everything else is read from rows aicloud already keeps: the params from the job's spec, the
per-epoch objective from its run's metric series, the final value from the model version it
registered (else the run's last value), and a pruning decision from the job's message (written
before the job is cancelled). :func:`load_trials` turns those rows into :class:`TrialRecord` s; the
sweep controller rebuilds its Optuna study from them after a restart, and the trials API shows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aicloud.entities import Job, JobStatus
from aicloud.errors import NotFoundError
from aicloud.schemas.sweeps import SweepSpec, TrialOut, pruned_epoch, trial_number
from aicloud.store.training import JobStore, ModelStore, RunStore

__all__ = ["TrialRecord", "load_trial", "load_trials", "trial_children"]

MAX_TRIALS_LISTED = 100_000


@dataclass(frozen=True)
class TrialRecord:
    """One trial, derived from its job, run and model version."""

    number: int
    job: Job
    params: dict[str, Any]  # the searched params, as the trial's train params have them
    state: str  # pending, running, complete, pruned, failed, cancelled
    intermediate: dict[int, float] = field(default_factory=dict)  # epoch → objective (to the prune epoch)
    value: float | None = None  # the final objective of a complete trial
    epochs: int = 0  # epochs the trial ran (all of them, also after a prune decision)
    pruned_at: int | None = None
    note: str | None = None

    @property
    def terminal(self) -> bool:
        return self.job.status.terminal

    def out(self) -> TrialOut:
        return TrialOut(
            number=self.number,
            job_id=self.job.id,
            status=self.job.status.value,
            state=self.state,
            params=self.params,
            value=self.value,
            intermediate=self.intermediate,
            epochs=self.epochs,
            pruned_at=self.pruned_at,
            run_id=self.job.run_id,
            model_version_id=self.job.model_version_id,
            note=self.note,
        )


def trial_children(jobs: JobStore, sweep: Job) -> dict[int, Job]:
    """The sweep's trial jobs by number (jobs without a trial number are ignored)."""
    out: dict[int, Job] = {}
    for job in jobs.list(sweep.workspace_id, parent_id=sweep.id, limit=MAX_TRIALS_LISTED):
        number = trial_number(job.name)
        if number is not None and (number not in out or job.created_at < out[number].created_at):
            out[number] = job
    return out


def _series(runs: RunStore, job: Job, name: str) -> dict[int, float]:
    if not job.run_id:
        return {}
    try:
        points = runs.metric_history(job.workspace_id, job.run_id, name)
    except NotFoundError:
        return {}
    return {p.step: p.value for p in points if math.isfinite(p.value)}


def _final_value(runs: RunStore, models: ModelStore | None, job: Job, metric: str) -> float | None:
    """The kept model's metric (what was registered), else the run's last value of it."""
    if models is not None and job.model_version_id:
        try:
            value = models.get_version_by_id(job.workspace_id, job.model_version_id).metrics.get(metric)
        except NotFoundError:
            value = None
        if value is not None and math.isfinite(value):
            return float(value)
    if job.run_id:
        try:
            summary = runs.get(job.workspace_id, job.run_id).summary
        except NotFoundError:
            return None
        value = summary.get(metric)
        if value is not None and math.isfinite(value):
            return float(value)
    return None


def load_trial(
    runs: RunStore, models: ModelStore | None, spec: SweepSpec, number: int, job: Job
) -> TrialRecord:
    """The record of one trial job (a few reads: its metric series, run and model version)."""
    metric = spec.objective
    params = {name: job.spec.get("params", {}).get(name) for name in spec.space}
    pruned_at = pruned_epoch(job.message) if job.reason in (None, "pruned", "cancelled") else None
    series = _series(runs, job, metric)
    if job.reason == "pruned" and pruned_at is None:  # the marker message was overwritten
        pruned_at = max(series, default=0)
    command = spec.command is not None  # a command's steps are those of the metric it logs
    epochs_series = series if metric == "train_loss" or command else _series(runs, job, "train_loss")
    intermediate = {s: v for s, v in sorted(series.items()) if pruned_at is None or s <= pruned_at}
    value, note = None, None
    if pruned_at is not None:
        state = "pruned"
        value = intermediate[max(intermediate)] if intermediate else None
    elif job.status is JobStatus.PENDING:
        state = "pending"
    elif job.status is JobStatus.RUNNING:
        state = "running"
    elif job.status is JobStatus.SUCCEEDED:
        value = _final_value(runs, models, job, metric)
        state = "complete" if value is not None else "failed"
        if value is None and command:
            note = f"the command never logged metric {metric!r} (aicloud.training.log_metric)"
        elif value is None:
            note = f"the trial succeeded but never reported {metric!r}"
    elif job.status is JobStatus.CANCELLED:
        state = "cancelled"
    else:
        state = "failed"
        note = (job.reason or "error") + (f": {_first_line(job.message)}" if job.message else "")
    return TrialRecord(
        number=number,
        job=job,
        params=params,
        state=state,
        intermediate=intermediate,
        value=value,
        epochs=len(epochs_series),
        pruned_at=pruned_at,
        note=note,
    )


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def load_trials(
    jobs: JobStore, runs: RunStore, models: ModelStore | None, sweep: Job, spec: SweepSpec
) -> list[TrialRecord]:
    """Every trial of the sweep, by number."""
    return [load_trial(runs, models, spec, n, job) for n, job in sorted(trial_children(jobs, sweep).items())]


def best_trial(records: list[TrialRecord], maximize: bool) -> TrialRecord | None:
    """The complete trial with the best final value (the lowest number among ties)."""
    complete = [r for r in records if r.state == "complete" and r.value is not None]
    if not complete:
        return None
    sign = -1.0 if maximize else 1.0
    return min(complete, key=lambda r: (sign * float(r.value or 0.0), r.number))
