"""The sweep controller against in-memory stores, with trial jobs "run" by a fake job runner."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from aicloud.controllers.sweep_trials import TrialRecord, load_trials
from aicloud.controllers.sweeps import SweepController
from aicloud.entities import Job, JobKind, JobStatus, MetricPoint
from aicloud.schemas.sweeps import SweepSpec, trial_number
from aicloud.testing.stores import InMemoryJobStore, InMemoryRunStore

TRAIN = {
    "task": "image-classification",
    "dataset": "d:1",
    "eval_dataset": "e:1",
    "target": "label",
    "params": {"epochs": 9},
}
SPACE = {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-1}}


def accuracy(params: dict[str, Any], epoch: int) -> float:
    """Best near lr = 3e-3; rises with epochs."""
    quality = 0.95 - 0.15 * abs(math.log10(params["lr"]) + 2.5)
    return quality * (1 - math.exp(-epoch / 2))


class FakeRunner:
    """Plays the job controller and the trials: one epoch per running trial per step."""

    def __init__(self, jobs: InMemoryJobStore, runs: InMemoryRunStore, fail: bool = False) -> None:
        self.jobs, self.runs, self.fail = jobs, runs, fail

    def step(self) -> None:
        for job in self.jobs.in_states([JobStatus.RUNNING]):
            if job.kind is JobKind.SWEEP:
                continue
            assert job.run_id
            if job.cancel_requested:
                self.jobs.transition(
                    job.id, expect=[JobStatus.RUNNING], status=JobStatus.CANCELLED, reason="cancelled"
                )
                continue
            if self.fail:
                self.jobs.transition(
                    job.id,
                    expect=[JobStatus.RUNNING],
                    status=JobStatus.FAILED,
                    reason="error",
                    message="boom\nValueError: bad",
                )
                continue
            done = len(self.runs.metric_history(job.workspace_id, job.run_id, "train_loss"))
            epoch = done + 1
            value = accuracy(job.spec["params"], epoch)
            self.runs.log_metrics(
                job.workspace_id,
                job.run_id,
                [
                    MetricPoint("train_loss", epoch, 1 - value, 0.0),
                    MetricPoint("eval_accuracy", epoch, value, 0.0),
                ],
            )
            if epoch >= job.spec["params"]["epochs"]:
                self.jobs.transition(job.id, expect=[JobStatus.RUNNING], status=JobStatus.SUCCEEDED)
        for job in self.jobs.in_states([JobStatus.PENDING]):
            if job.kind is JobKind.SWEEP:
                continue
            run = self.runs.create(
                workspace_id=job.workspace_id, job_id=job.id, name=job.name, params=job.spec["params"]
            )
            self.jobs.update(job.id, run_id=run.id)
            self.jobs.transition(job.id, expect=[JobStatus.PENDING], status=JobStatus.RUNNING)


def make(**spec_changes: Any) -> tuple[InMemoryJobStore, InMemoryRunStore, Job]:
    jobs = InMemoryJobStore()
    runs = InMemoryRunStore(jobs)
    spec = {"train": TRAIN, "space": SPACE, "max_trials": 8, "parallelism": 2, **spec_changes}
    SweepSpec.model_validate(spec)
    sweep = jobs.create(workspace_id="ws", name="s", kind=JobKind.SWEEP, spec=spec, created_by="tok")
    return jobs, runs, sweep


def drive(
    controller: SweepController, runner: FakeRunner, jobs: InMemoryJobStore, sweep_id: str, passes: int = 500
) -> Job:
    for _ in range(passes):
        controller.reconcile_once()
        sweep = jobs.get_any(sweep_id)
        if sweep.status.terminal:
            return sweep
        runner.step()
    raise AssertionError(f"the sweep did not end: {jobs.get_any(sweep_id)}")


def trials(jobs: InMemoryJobStore, runs: InMemoryRunStore, sweep: Job) -> list[TrialRecord]:
    return load_trials(jobs, runs, None, sweep, SweepSpec.model_validate(sweep.spec))


def test_a_sweep_runs_its_trials_prunes_poor_ones_and_registers_the_best() -> None:
    jobs, runs, sweep = make(pruner={"type": "asha", "min_resource": 1, "reduction_factor": 2})
    registered: list[tuple[str, int]] = []

    def register(sw: Job, spec: SweepSpec, best: TrialRecord) -> str:
        registered.append((sw.id, best.number))
        return "mv_1"

    woken: list[int] = []
    controller = SweepController(jobs, runs, register_best=register, wake_jobs=lambda: woken.append(1))
    runner = FakeRunner(jobs, runs)
    max_active = 0
    for _ in range(500):
        controller.reconcile_once()
        active = [j for j in jobs.list("ws", parent_id=sweep.id) if not j.status.terminal]
        max_active = max(max_active, len(active))
        if jobs.get_any(sweep.id).status.terminal:
            break
        runner.step()
    done = jobs.get_any(sweep.id)
    assert done.status is JobStatus.SUCCEEDED, done
    assert max_active <= 2 and woken
    records = trials(jobs, runs, done)
    assert [r.number for r in records] == list(range(8))
    pruned = [r for r in records if r.state == "pruned"]
    assert pruned and all(r.job.reason == "pruned" and r.epochs < 9 for r in pruned)
    assert all(r.job.parent_id == sweep.id and r.job.created_by == "tok" for r in records)
    best = max((r for r in records if r.state == "complete"), key=lambda r: r.value or 0)
    assert registered == [(sweep.id, best.number)] and done.model_version_id == "mv_1"
    assert done.usage["best_trial"] == best.number and done.usage["best_job_id"] == best.job.id
    assert done.usage["best_params"] == {"lr": best.job.spec["params"]["lr"]}
    assert done.usage["epochs"] == sum(r.epochs for r in records) < 8 * 9
    assert done.usage["pruned"] == len(pruned) and done.usage["trials"] == 8
    assert all(r.job.spec["model_name"] == "s-trials" for r in records)


def test_without_pruning_every_trial_runs_all_epochs() -> None:
    jobs, runs, sweep = make(pruner="none", max_trials=4)
    done = drive(SweepController(jobs, runs), FakeRunner(jobs, runs), jobs, sweep.id)
    assert done.status is JobStatus.SUCCEEDED
    assert [r.epochs for r in trials(jobs, runs, done)] == [9, 9, 9, 9] and done.usage["epochs"] == 36


def test_a_restarted_controller_loses_no_trial_and_runs_none_twice() -> None:
    jobs, runs, sweep = make(pruner={"type": "asha", "min_resource": 1, "reduction_factor": 2})
    runner = FakeRunner(jobs, runs)
    first = SweepController(jobs, runs)
    for _ in range(12):
        first.reconcile_once()
        runner.step()
    before = {r.number: r.job.id for r in trials(jobs, runs, jobs.get_any(sweep.id))}
    assert 2 <= len(before) < 8
    done = drive(SweepController(jobs, runs), runner, jobs, sweep.id)  # a new process: nothing in memory
    assert done.status is JobStatus.SUCCEEDED
    records = trials(jobs, runs, done)
    assert [r.number for r in records] == list(range(8))
    assert {n: r.job.id for n, r in ((r.number, r) for r in records) if n in before} == before
    children = jobs.list("ws", parent_id=sweep.id)
    assert len(children) == 8 and sorted(trial_number(j.name) for j in children)  # type: ignore[type-var] == list(range(8))


def test_a_prune_decided_before_a_restart_is_carried_out() -> None:
    jobs, runs, sweep = make(max_trials=1)
    controller = SweepController(jobs, runs)
    runner = FakeRunner(jobs, runs)
    controller.reconcile_once()
    runner.step()
    trial = jobs.list("ws", parent_id=sweep.id)[0]
    jobs.update(
        trial.id, message="pruned at epoch 1: eval_accuracy=0.1 was not among the best trials at that epoch"
    )
    done = drive(SweepController(jobs, runs), runner, jobs, sweep.id)
    record = trials(jobs, runs, done)[0]
    assert (
        record.state == "pruned"
        and record.job.reason == "pruned"
        and record.job.status is JobStatus.CANCELLED
    )
    assert done.status is JobStatus.FAILED and done.reason == "no_trial_completed"


def test_cancelling_a_sweep_cancels_its_trials() -> None:
    jobs, runs, sweep = make()
    controller = SweepController(jobs, runs)
    runner = FakeRunner(jobs, runs)
    for _ in range(3):
        controller.reconcile_once()
        runner.step()
    jobs.request_cancel("ws", sweep.id)
    done = drive(controller, runner, jobs, sweep.id)
    assert done.status is JobStatus.CANCELLED
    assert all(j.status.terminal for j in jobs.list("ws", parent_id=sweep.id))
    assert any(j.status is JobStatus.CANCELLED for j in jobs.list("ws", parent_id=sweep.id))


def test_a_sweep_whose_trials_all_fail_stops_early_with_the_reason() -> None:
    jobs, runs, sweep = make(max_trials=20, parallelism=1)
    done = drive(SweepController(jobs, runs), FakeRunner(jobs, runs, fail=True), jobs, sweep.id)
    assert done.status is JobStatus.FAILED and done.reason == "trials_failed"
    assert "ValueError: bad" in (done.message or "")
    assert len(jobs.list("ws", parent_id=sweep.id)) == 3


def test_the_job_controller_leaves_sweeps_alone(tmp_path: Path) -> None:
    from aicloud.config import Settings
    from aicloud.controllers.jobs import JobController
    from aicloud.testing.executors import FakeExecutor

    jobs = InMemoryJobStore()
    sweep = jobs.create(workspace_id="ws", name="s", kind=JobKind.SWEEP, spec={})
    executor = FakeExecutor(tmp_path)
    controller = JobController(jobs, executor, Settings(), launcher=lambda j: None, max_concurrent=1)  # type: ignore[arg-type,return-value]
    controller.reconcile_once()
    assert jobs.get_any(sweep.id).status is JobStatus.PENDING


def test_sampled_params_that_make_no_valid_train_spec_fail_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    import aicloud.controllers.sweeps as sweeps

    monkeypatch.setattr(sweeps, "trial_params", lambda spec, sampled: {"epochs": -1})
    jobs, runs, sweep = make()
    SweepController(jobs, runs).reconcile_once()
    done = jobs.get_any(sweep.id)
    assert done.status is JobStatus.FAILED and done.reason == "invalid" and "epochs" in (done.message or "")
    assert jobs.list("ws", parent_id=sweep.id) == []
