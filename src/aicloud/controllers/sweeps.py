"""The sweep controller: a reconcile loop that drives ``sweep`` jobs through their trials.

A sweep job has no process of its own. Each :meth:`SweepController.reconcile_once` pass, for every
``pending`` or ``running`` sweep:

1. a ``pending`` sweep becomes ``running``;
2. its trials (``train`` jobs, or ``command`` jobs for a sweep over your own code, with
   ``parent_id`` = the sweep, run by the job controller) are read
   from the store. A trial the controller has not seen yet (a restart) is put into the sweep's
   Optuna study as the store has it (:class:`~aicloud.controllers.sweep_study.LiveStudy`);
3. each running trial's new per-epoch objective values (its run's metric series) are reported to
   Optuna; when the pruner says stop, the decision is written to the trial job's message
   (``pruned at epoch N: ...``) *before* the job is cancelled (a command trial's SIGTERM reaches the
   user's command), so a restart reads it back; a trial
   that ended is told its final value (the registered model's metric) or ``FAIL``; a cancelled
   pruned trial gets reason ``pruned``;
4. a cancel of the sweep cancels its trials, and the sweep is ``cancelled`` once they have ended;
   a sweep whose first trials all fail (``FAIL_FAST`` of them, none complete or pruned) stops and
   fails with reason ``trials_failed``;
5. otherwise new trials are sampled and created (trial number = the next free one, in the job's
   name) while fewer than ``parallelism`` are pending or running and fewer than ``max_trials`` exist;
6. when all ``max_trials`` trials have ended, the best complete trial's model is registered under
   the sweep's model name (``register_best``) and the sweep ``succeeds``, its ``usage`` holding the
   best value, params and trial and the epochs spent; with no complete trial it ``fails``
   (reason ``no_trial_completed``).

Restart safety: every fact the controller acts on is a row (trial jobs with their numbers and
params, metric series, prune markers), and every step is idempotent, so after a kill -9 the first
pass rebuilds the study and goes on: no trial is lost (a trial exists once its job exists) and none
runs twice (numbers come from the existing jobs; the job controller re-attaches to running trials).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydantic

from aicloud.controllers.loop import ReconcileLoop
from aicloud.controllers.sweep_trials import TrialRecord, best_trial, load_trial, trial_children
from aicloud.entities import Job, JobKind, JobStatus
from aicloud.schemas.sweeps import (
    SweepSpec,
    pruned_epoch,
    pruned_message,
    trial_command,
    trial_name,
    trial_params,
    trials_model_name,
)
from aicloud.schemas.training import CommandSpec, TrainSpec
from aicloud.store.training import JobStore, ModelStore, RunStore

if TYPE_CHECKING:  # Optuna is imported with the first sweep (half a second)
    from aicloud.controllers.sweep_study import LiveStudy

__all__ = ["FAIL_FAST", "RegisterBest", "SweepController", "sweep_summary"]

log = logging.getLogger("aicloud.controllers.sweeps")

FAIL_FAST = 3
"""A sweep stops when this many trials (or all of them, if fewer) failed before any completed."""

RegisterBest = Callable[[Job, SweepSpec, TrialRecord], "str | None"]
"""``(sweep, spec, best trial)`` → the id of the model version registered for the sweep (or None)."""


def _now() -> datetime:
    return datetime.now(UTC)


def model_name_of(sweep: Job, spec: SweepSpec) -> str:
    """The registry name of the sweep's best model: the base spec's ``model_name``, else the sweep's name."""
    return (spec.train.model_name if spec.train is not None else None) or sweep.name


def sweep_summary(spec: SweepSpec, records: list[TrialRecord], created: int) -> dict[str, Any]:
    """What the sweep job's ``usage`` shows: counts, epochs spent, and the best trial so far."""
    states = [r.state for r in records]
    summary: dict[str, Any] = {
        "metric": spec.objective,
        "direction": "maximize" if spec.maximize else "minimize",
        "trials": created,
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "failed": states.count("failed") + states.count("cancelled"),
        "epochs": sum(r.epochs for r in records),
    }
    best = best_trial(records, spec.maximize)
    if best is not None:
        summary.update(
            best_value=best.value, best_trial=best.number, best_job_id=best.job.id, best_params=best.params
        )
    return summary


class SweepController(ReconcileLoop):
    """Reconciles ``sweep`` jobs with their trial jobs; see the module docstring.

    ``models`` (optional) gives trials' final values from their registered model versions (else the
    run's last value). ``register_best`` registers the winner; ``wake_jobs`` nudges the job
    controller after trials are created or cancelled.
    """

    loop_name = "sweep controller"

    def __init__(
        self,
        jobs: JobStore,
        runs: RunStore,
        models: ModelStore | None = None,
        *,
        register_best: RegisterBest | None = None,
        wake_jobs: Callable[[], None] | None = None,
        interval: float = 0.25,
    ) -> None:
        self.jobs = jobs
        self.runs = runs
        self.models = models
        self.register_best = register_best
        self.wake_jobs = wake_jobs or (lambda: None)
        super().__init__(interval)
        self._live: dict[str, LiveStudy] = {}  # sweep id → its study (rebuilt after a restart)
        self._ended: dict[str, dict[int, TrialRecord]] = {}  # sweep id → records of ended trials
        self._usage: dict[str, dict[str, Any]] = {}  # sweep id → the usage last written

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (trials keep running; a new controller takes the sweeps over)."""
        self._stop_loop(timeout)

    def reconcile_once(self) -> None:
        """One idempotent pass over every live sweep. Thread-safe."""
        with self._pass_lock:
            seen: set[str] = set()
            for sweep in self.jobs.in_states([JobStatus.PENDING, JobStatus.RUNNING], kinds=[JobKind.SWEEP]):
                seen.add(sweep.id)
                try:
                    self._reconcile(sweep)
                except Exception:
                    log.exception("sweep %s: reconcile failed", sweep.id)
            for gone in set(self._live) - seen:
                self._forget(gone)
            self.idle = not seen

    def _forget(self, sweep_id: str) -> None:
        self._live.pop(sweep_id, None)
        self._ended.pop(sweep_id, None)
        self._usage.pop(sweep_id, None)

    # -- one sweep -----------------------------------------------------------------------------------

    def _reconcile(self, sweep: Job) -> None:
        try:
            spec = SweepSpec.model_validate(sweep.spec)
        except pydantic.ValidationError as exc:
            self._finish(sweep, JobStatus.FAILED, "invalid", f"the stored sweep spec is invalid: {exc}", {})
            return
        if sweep.status is JobStatus.PENDING:
            started = self.jobs.transition(
                sweep.id, expect=[JobStatus.PENDING], status=JobStatus.RUNNING, started_at=_now()
            )
            if started is None:
                return
            sweep = started
            log.info("sweep %s running", sweep.id)
        live = self._live.get(sweep.id)
        if live is None:
            from aicloud.controllers.sweep_study import LiveStudy

            live = self._live[sweep.id] = LiveStudy.create(spec)
        ended = self._ended.setdefault(sweep.id, {})
        children = trial_children(self.jobs, sweep)
        stopping = sweep.cancel_requested
        for number, job in sorted(children.items()):
            if number not in ended:
                self._sync_trial(sweep, spec, live, ended, number, job, stopping)

        active = [job for job in children.values() if not job.status.terminal]
        records = [ended[n] for n in sorted(ended)]
        if sweep.cancel_requested:
            self._cancel_all(active)
            if not active:
                self._finish(
                    sweep, JobStatus.CANCELLED, "cancelled", None, sweep_summary(spec, records, len(children))
                )
            return
        failing = self._failing(spec, records)
        if failing is not None:
            self._cancel_all(active)
            if not active:
                self._finish(
                    sweep,
                    JobStatus.FAILED,
                    "trials_failed",
                    failing,
                    sweep_summary(spec, records, len(children)),
                )
            return
        target = spec.effective_max_trials()
        while len(active) < spec.parallelism and len(children) < target:
            number = max(children, default=-1) + 1
            created = self._create_trial(sweep, spec, live, number)
            if created is None:  # the sampled params make no valid train spec: the sweep failed
                return
            children[number] = created
            active.append(created)
        if len(children) >= target and not active:
            self._complete(sweep, spec, records, len(children))
            return
        summary = sweep_summary(spec, records, len(children))
        summary["epochs"] += sum(live.last_step.get(n, 0) for n, j in children.items() if n not in ended)
        if summary != self._usage.get(sweep.id):
            self.jobs.update(sweep.id, usage=summary)
            self._usage[sweep.id] = summary

    def _sync_trial(
        self,
        sweep: Job,
        spec: SweepSpec,
        live: LiveStudy,
        ended: dict[int, TrialRecord],
        number: int,
        job: Job,
        stopping: bool,
    ) -> None:
        record: TrialRecord | None = None
        if number not in live.trial_ids:  # first sight since this controller started
            record = load_trial(self.runs, self.models, spec, number, job)
            live.add(record)
        if job.status.terminal:
            if number not in live.finished:
                self._report_new(live, spec, number, job, prune=False)
                record = None
            record = record or load_trial(self.runs, self.models, spec, number, job)
            if record.state == "pruned" and job.status is JobStatus.CANCELLED and job.reason != "pruned":
                self.jobs.transition(
                    job.id, expect=[JobStatus.CANCELLED], status=JobStatus.CANCELLED, reason="pruned"
                )
            live.tell(number, record.state, record.value)
            ended[number] = record
            log.info("sweep %s: trial %d %s (%s)", sweep.id, number, record.state, record.value)
            return
        if pruned_epoch(job.message) is not None:  # decided before a restart: make sure it stops
            live.tell(number, "pruned")
            if not job.cancel_requested:
                self.jobs.request_cancel(job.workspace_id, job.id)
                self.wake_jobs()
            return
        if job.status is JobStatus.RUNNING and not stopping and not job.cancel_requested:
            self._report_new(live, spec, number, job, prune=True)

    def _report_new(self, live: LiveStudy, spec: SweepSpec, number: int, job: Job, *, prune: bool) -> None:
        """Report the epochs not yet reported; with ``prune``, stop the trial when the pruner says so."""
        if not job.run_id or number in live.finished:
            return
        last = live.last_step.get(number, 0)
        # a train trial's last epoch is known; a command's last step is not (0: prune at any step)
        epochs = int((job.spec.get("params") or {}).get("epochs") or 0) if spec.train is not None else 0
        points = [
            p for p in self.runs.metric_history(job.workspace_id, job.run_id, spec.objective) if p.step > last
        ]
        for point in sorted(points, key=lambda p: p.step):
            if point.value != point.value:  # NaN: not reportable
                continue
            # at its last epoch a trial has spent what pruning would save: let it complete
            if live.report(number, point.step, point.value) and prune and (not epochs or point.step < epochs):
                self._prune(live, spec, number, job, point.step, point.value)
                return

    def _prune(
        self, live: LiveStudy, spec: SweepSpec, number: int, job: Job, step: int, value: float
    ) -> None:
        log.info(
            "sweep trial %s (%d): pruned at epoch %d (%s=%.4g)", job.id, number, step, spec.objective, value
        )
        self.jobs.update(job.id, message=pruned_message(step, spec.objective, value))
        self.jobs.request_cancel(job.workspace_id, job.id)
        live.tell(number, "pruned")
        self.wake_jobs()

    def _cancel_all(self, active: list[Job]) -> None:
        for job in active:
            if not job.cancel_requested:
                self.jobs.request_cancel(job.workspace_id, job.id)
        if active:
            self.wake_jobs()

    @staticmethod
    def _failing(spec: SweepSpec, records: list[TrialRecord]) -> str | None:
        """Why the sweep should stop early: its first trials all failed (a broken setup), else None."""
        if any(r.state in ("complete", "pruned") for r in records):
            return None
        failed = [r for r in records if r.state == "failed"]
        if len(failed) < min(FAIL_FAST, spec.effective_max_trials()):
            return None
        first = failed[0]
        return (
            f"the first {len(failed)} trials failed, none completed; trial {first.number} "
            f"(job {first.job.id}): {first.note or first.job.reason or 'failed'}"
        )

    def _create_trial(self, sweep: Job, spec: SweepSpec, live: LiveStudy, number: int) -> Job | None:
        sampled = live.ask(number)
        try:
            trial = spec.base.model_dump(mode="json")
            trial["params"] = trial_params(spec, sampled)
            resolved = spec.base.resolved_datasets or spec.resolved_datasets
            trial["resolved_datasets"] = {k: v.model_dump() for k, v in (resolved or {}).items()} or None
            model: type[TrainSpec | CommandSpec]
            if spec.command is not None:
                kind, model = JobKind.COMMAND, CommandSpec
                trial["command"] = trial_command(spec, trial["params"])
            else:
                kind, model = JobKind.TRAIN, TrainSpec
                trial["model_name"] = trials_model_name(model_name_of(sweep, spec))
            try:
                model.model_validate(trial)
            except pydantic.ValidationError as exc:
                live.forget(number)
                why = f"trial {number}'s params {sampled} make an invalid {kind.value} spec: {exc}"
                self._finish(sweep, JobStatus.FAILED, "invalid", why[:4000], {})
                return None
            job = self.jobs.create(
                workspace_id=sweep.workspace_id,
                name=trial_name(sweep.name, number),
                kind=kind,
                spec=trial,
                priority=sweep.priority,
                created_by=sweep.created_by,
                parent_id=sweep.id,
            )
        except Exception:
            live.forget(number)
            raise
        log.info("sweep %s: trial %d is job %s with %s", sweep.id, number, job.id, sampled)
        self.wake_jobs()
        return job

    def _complete(self, sweep: Job, spec: SweepSpec, records: list[TrialRecord], created: int) -> None:
        summary = sweep_summary(spec, records, created)
        best = best_trial(records, spec.maximize)
        if best is None:
            reasons = "; ".join(
                f"trial {r.number}: {r.state}" + (f" ({r.note})" if r.note else "") for r in records[:5]
            )
            self._finish(
                sweep,
                JobStatus.FAILED,
                "no_trial_completed",
                f"none of the {created} trials completed: {reasons}",
                summary,
            )
            return
        if self.register_best is not None:
            version_id = self.register_best(sweep, spec, best)
            if version_id is not None:
                self.jobs.update(sweep.id, model_version_id=version_id)
        self._finish(sweep, JobStatus.SUCCEEDED, None, None, summary)

    def _finish(
        self, sweep: Job, status: JobStatus, reason: str | None, message: str | None, usage: dict[str, Any]
    ) -> None:
        done = self.jobs.transition(
            sweep.id,
            expect=[JobStatus.PENDING, JobStatus.RUNNING],
            status=status,
            reason=reason,
            message=message,
            finished_at=_now(),
            usage=usage,
        )
        if done is not None:
            log.info("sweep %s %s%s", sweep.id, status.value, f" ({reason})" if reason else "")
        self._forget(sweep.id)
