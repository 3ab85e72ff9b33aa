"""The sweep controller's hooks into the control plane, and the trials table.

* :class:`SweepLauncher` builds the :class:`~aicloud.controllers.sweeps.SweepController` (it launches
  trials as child ``train`` jobs) and registers the best trial's model under the sweep's model
  name, with lineage to that trial's job and run.
* :func:`trials_table` is the ``GET /jobs/{id}/trials`` answer, read from the store.

A sweep's spec is validated with the other kinds' in :mod:`aicloud.server.services.specs`.
"""

from __future__ import annotations

import logging

from aicloud.controllers.sweep_trials import TrialRecord, best_trial, load_trials
from aicloud.controllers.sweeps import SweepController, model_name_of
from aicloud.entities import Job, JobKind
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.sweeps import SweepSpec, SweepTrialsOut
from aicloud.server.state import AppState

__all__ = ["SweepLauncher", "trials_table"]

log = logging.getLogger("aicloud.sweeps")


def trials_table(state: AppState, sweep: Job) -> SweepTrialsOut:
    """Every trial of a sweep with its params, state, per-epoch and final objective, and the best."""
    if sweep.kind is not JobKind.SWEEP:
        raise ValidationError.field(
            "job_id", f"job {sweep.id} is a {sweep.kind.value} job; only sweeps have trials"
        )
    spec = SweepSpec.model_validate(sweep.spec)
    store = state.store
    records = load_trials(store.jobs, store.runs, store.models, sweep, spec)
    best = best_trial(records, spec.maximize)
    return SweepTrialsOut(
        sweep_id=sweep.id,
        status=sweep.status.value,
        metric=spec.objective,
        direction="maximize" if spec.maximize else "minimize",
        max_trials=spec.effective_max_trials(),
        trials=[r.out() for r in records],
        best=best.out() if best is not None else None,
        epochs=sum(r.epochs for r in records),
    )


class SweepLauncher:
    """The control plane's side of sweeps: the controller and the registration of the winner."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def controller(self) -> SweepController:
        store = self.state.store
        return SweepController(
            store.jobs,
            store.runs,
            store.models,
            register_best=self.register_best,
            wake_jobs=self.wake_job_controller,
        )

    def wake_job_controller(self) -> None:
        """The sweep controller's nudge after it creates or cancels trials: the job controller only
        (``AppState.wake_jobs`` wakes the sweep controller too, which would wake itself)."""
        if self.state.jobs is not None:
            self.state.jobs.wake()

    def register_best(self, sweep: Job, spec: SweepSpec, best: TrialRecord) -> str | None:
        """Register the best trial's model as the next version of the sweep's model (idempotent).

        The files are the trial's (content-addressed blobs: nothing is copied); the lineage is the
        trial's (its job, run and datasets) plus ``sweep_id`` and ``trial``.
        """
        trial = best.job
        if not trial.model_version_id:
            log.warning("sweep %s: best trial %d registered no model", sweep.id, best.number)
            return None
        models = self.state.store.models
        ws = sweep.workspace_id
        name = model_name_of(sweep, spec)
        try:
            existing = models.list_versions(ws, name)
        except NotFoundError:
            existing = []
        for version in existing:  # registered before a restart
            if version.lineage.get("sweep_id") == sweep.id:
                return version.id
        source = models.get_version_by_id(ws, trial.model_version_id)
        lineage = {**source.lineage, "sweep_id": sweep.id, "trial": best.number, "params": best.params}
        version = models.create_version(
            workspace_id=ws,
            name=name,
            files=source.files,
            signature=source.signature,
            config=source.config,
            metrics=source.metrics,
            lineage=lineage,
        )
        log.info(
            "sweep %s: registered trial %d's model as %s v%d", sweep.id, best.number, name, version.version
        )
        return version.id
