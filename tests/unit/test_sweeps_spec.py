"""Sweep specs, the Optuna study rebuilt from stored trials, and the search space's sampling."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from aicloud.controllers.sweep_study import LiveStudy, distributions, rung_attrs
from aicloud.controllers.sweep_trials import TrialRecord
from aicloud.entities import Job, JobKind, JobStatus
from aicloud.errors import ValidationError
from aicloud.schemas.sweeps import (
    TASK_METRICS,
    SweepSpec,
    check_sweep_spec,
    grid_points,
    pruned_epoch,
    pruned_message,
    trial_name,
    trial_number,
    trial_params,
)

TRAIN = {"task": "image-classification", "dataset": "d:1", "eval_dataset": "e:1", "target": "label"}
LR = {"type": "log_uniform", "low": 1e-4, "high": 1e-1}


def spec(**changes: Any) -> SweepSpec:
    doc: dict[str, Any] = {"train": TRAIN, "space": {"lr": LR}, **changes}
    return SweepSpec.model_validate(doc)


def field_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value.details[0]["field"])


# -- checking specs --------------------------------------------------------------------------------


def test_an_empty_space_is_refused_with_an_example() -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(space={}))
    assert (
        field_of(exc) == "spec.space" and "empty" in exc.value.message and "log_uniform" in exc.value.message
    )


def test_an_unknown_param_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(space={"learning_rate": LR}))
    assert field_of(exc) == "spec.space.learning_rate"
    assert (
        "'learning_rate'" in exc.value.message
        and "lr" in exc.value.message
        and "dropout" in exc.value.message
    )


def test_an_objective_the_task_never_reports_lists_those_it_does() -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(metric="val_accuracy"))
    assert field_of(exc) == "spec.metric"
    assert "val_accuracy" in exc.value.message and "eval_accuracy" in exc.value.message
    regression = {**TRAIN, "task": "tabular-regression"}
    with pytest.raises(ValidationError, match="eval_rmse"):
        check_sweep_spec(spec(train=regression, metric="eval_accuracy"))


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"epochs": {"type": "uniform", "low": 1, "high": 5}}, "integer"),
        ({"optimizer": {"type": "uniform", "low": 0, "high": 1}}, "categorical"),
        ({"optimizer": {"type": "categorical", "choices": ["adam", "rmsprop"]}}, "rmsprop"),
        ({"lr": {"type": "log_uniform", "low": 1e-3, "high": 100}}, "100"),
        ({"dropout": {"type": "uniform", "low": 0.0, "high": 1.0}}, "1.0"),
        ({"hidden": {"type": "uniform", "low": 8, "high": 64}}, "list"),
        ({"lr": {"type": "categorical", "choices": [[1, 2]]}}, "single value"),
    ],
)
def test_a_range_the_task_does_not_accept_names_the_param(space: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(space=space))
    assert field_of(exc) == f"spec.space.{next(iter(space))}"
    assert words in exc.value.message


def test_bad_bounds_are_refused_by_the_schema() -> None:
    for bad in (
        {"type": "uniform", "low": 1, "high": 1},
        {"type": "log_uniform", "low": 0, "high": 1},
        {"type": "int", "low": 5, "high": 1},
        {"type": "categorical", "choices": []},
        {"type": "categorical", "choices": ["a", "a"]},
        {"type": "normal", "low": 0, "high": 1},
    ):
        with pytest.raises(Exception, match="validation error"):
            spec(space={"lr": bad})


def test_grid_needs_discrete_spaces_and_caps_max_trials() -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(sampler="grid"))
    assert field_of(exc) == "spec.sampler" and "lr" in exc.value.message
    grid = spec(
        sampler={"type": "grid"},
        max_trials=50,
        space={
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
        },
    )
    check_sweep_spec(grid)
    assert grid.grid_size() == 8 and grid.effective_max_trials() == 8
    points = grid_points(grid)
    assert len({(p["optimizer"], p["batch_size"]) for p in points}) == 8


def test_defaults_follow_the_task_and_metric() -> None:
    assert spec().objective == "eval_accuracy" and spec().maximize
    assert not spec(metric="eval_loss").maximize
    assert spec(metric="eval_loss", direction="maximize").maximize
    regression = spec(train={**TRAIN, "task": "tabular-regression"})
    assert regression.objective == "eval_loss" and not regression.maximize
    assert spec(pruner="none").pruner.type == "none" and spec().pruner.type == "asha"
    for metrics in TASK_METRICS.values():
        assert "train_loss" in metrics


def test_the_objectives_are_what_the_built_in_tasks_report() -> None:
    import torch

    from aicloud.training import tasks

    logits, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    assert set(tasks._classification_metrics(logits, y)) < set(TASK_METRICS["image-classification"])
    scaler = tasks.TargetScaler.fit(__import__("pandas").Series([1.0, 2.0, 3.0]))
    reg = tasks._regression_metrics(torch.zeros(3, 1), torch.zeros(3, 1), scaler)
    assert set(reg) < set(TASK_METRICS["tabular-regression"])


def test_hidden_accepts_widths_or_lists() -> None:
    s = spec(
        space={"hidden": {"type": "int", "low": 16, "high": 64}},
        train={**TRAIN, "params": {"hidden": [8, 8, 8]}},
    )
    check_sweep_spec(s)
    assert trial_params(s, {"hidden": 32})["hidden"] == [32, 32, 32]
    s = spec(space={"hidden": {"type": "categorical", "choices": [[64], [128, 64]]}})
    check_sweep_spec(s)
    assert trial_params(s, {"hidden": [128, 64]})["hidden"] == [128, 64]


def test_trial_names_and_prune_markers_read_back() -> None:
    assert trial_number(trial_name("x" * 100 + "-trial-9", 12)) == 12
    assert trial_number("digits-sweep") is None
    assert pruned_epoch(pruned_message(3, "eval_accuracy", 0.5)) == 3
    assert pruned_epoch("the job's process disappeared") is None and pruned_epoch(None) is None


# -- the study -------------------------------------------------------------------------------------


def _job(number: int, params: dict[str, Any], status: JobStatus = JobStatus.RUNNING) -> Job:
    from datetime import UTC, datetime

    return Job(
        id=f"job_{number}",
        workspace_id="ws",
        name=trial_name("s", number),
        kind=JobKind.TRAIN,
        spec={"params": params},
        status=status,
        priority=0,
        created_at=datetime.now(UTC),
    )


def test_sampled_params_stay_in_the_space_and_depend_on_seed_and_number_only() -> None:
    s = spec(
        space={
            "lr": LR,
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
            "batch_size": {"type": "int", "low": 16, "high": 128, "step": 16},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "hidden": {"type": "categorical", "choices": [[32], [64, 32]]},
        },
        sampler={"type": "tpe", "seed": 7},
    )
    first = LiveStudy.create(s)
    samples = [first.ask(n) for n in range(5)]
    for p in samples:
        assert 1e-4 <= p["lr"] <= 1e-1 and 0 <= p["dropout"] <= 0.5
        assert p["batch_size"] in range(16, 129, 16) and p["optimizer"] in ("adam", "sgd")
        assert p["hidden"] in ([32], [64, 32])
    # a restarted controller (a fresh study rebuilt with trials 0-2) samples trial 3 as before
    records = [
        TrialRecord(
            number=n, job=_job(n, trial_params(s, samples[n])), params=_swept(s, samples[n]), state="running"
        )
        for n in range(3)
    ]
    again = LiveStudy.create(s, records)
    assert again.ask(3) == samples[3]
    assert LiveStudy.create(spec(sampler={"type": "tpe", "seed": 8})).ask(0) != samples[0]


def _swept(s: SweepSpec, sampled: dict[str, Any]) -> dict[str, Any]:
    params = trial_params(s, sampled)
    return {name: params[name] for name in s.space}


def test_grid_trials_take_distinct_points() -> None:
    s = spec(
        sampler="grid",
        space={
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "adamw"]},
            "patience": {"type": "int", "low": 0, "high": 1},
        },
    )
    live = LiveStudy.create(s)
    seen = [live.ask(n) for n in range(6)]
    assert len({tuple(sorted(p.items())) for p in seen}) == 6


def _curve(rng: random.Random) -> list[float]:
    quality = rng.uniform(0.3, 0.95)
    return [quality * (1 - math.exp(-epoch / 2)) + rng.uniform(-0.02, 0.02) for epoch in range(1, 10)]


def test_a_rebuilt_study_holds_the_same_asha_rungs_as_the_live_one() -> None:
    """Pruning decisions survive a restart: the rung records derived from stored epochs equal Optuna's."""
    s = spec(max_trials=12, pruner={"type": "asha", "min_resource": 1, "reduction_factor": 2})
    live = LiveStudy.create(s)
    rng = random.Random(0)
    records = []
    for n in range(12):
        sampled = live.ask(n)
        curve = _curve(rng)
        pruned_at = None
        for epoch, value in enumerate(curve, start=1):
            if live.report(n, epoch, value):
                pruned_at = epoch
                live.tell(n, "pruned")
                break
        else:
            live.tell(n, "complete", curve[-1])
        shown = {e: v for e, v in enumerate(curve, start=1) if pruned_at is None or e <= pruned_at}
        records.append(
            TrialRecord(
                number=n,
                job=_job(
                    n, trial_params(s, sampled), JobStatus.CANCELLED if pruned_at else JobStatus.SUCCEEDED
                ),
                params=_swept(s, sampled),
                state="pruned" if pruned_at else "complete",
                intermediate=shown,
                value=shown[max(shown)],
                pruned_at=pruned_at,
            )
        )
    assert any(r.state == "pruned" for r in records) and any(r.state == "complete" for r in records)
    rebuilt = LiveStudy.create(s, records)
    for r in records:
        original = {
            k: v for k, v in live.frozen(r.number).system_attrs.items() if k.startswith("completed_rung")
        }
        assert rung_attrs(s, r.intermediate) == original
        assert rebuilt.frozen(r.number).system_attrs == original
        assert rebuilt.frozen(r.number).state == live.frozen(r.number).state
        assert rebuilt.frozen(r.number).params == live.frozen(r.number).params
    # and the next trial meets the same decisions on both
    curve = _curve(random.Random(99))
    live.ask(12)
    rebuilt.ask(12)
    for epoch, value in enumerate(curve, start=1):
        assert live.report(12, epoch, value) == rebuilt.report(12, epoch, value)


def test_distributions_cover_every_space_type() -> None:
    s = spec(
        space={
            "lr": LR,
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
            "batch_size": {"type": "int", "low": 8, "high": 64, "log": True},
            "hidden": {"type": "categorical", "choices": [[8], [16, 8]]},
        }
    )
    dists = distributions(s)
    assert dists["lr"].log and dists["batch_size"].log  # type: ignore[attr-defined]
    assert dists["hidden"].choices == ("[8]", "[16, 8]")  # type: ignore[attr-defined]
