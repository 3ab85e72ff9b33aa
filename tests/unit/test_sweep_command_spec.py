"""Sweeps over your own code: the spec rules, the trial's params and command, the params helper."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from aicloud.errors import ValidationError
from aicloud.schemas.sweeps import SweepSpec, check_sweep_spec, trial_command, trial_params
from aicloud.schemas.training import CommandSpec
from aicloud.training import params
from aicloud.training.params import param_env

COMMAND = {"command": "python train.py", "datasets": {"train": "digits"}}
SPACE = {
    "lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-1},
    "layers": {"type": "int", "low": 1, "high": 4},
}
TRAIN = {"task": "image-classification", "dataset": "d:1", "eval_dataset": "e:1", "target": "label"}


def spec(**changes: Any) -> SweepSpec:
    return SweepSpec.model_validate({"command": COMMAND, "space": SPACE, "metric": "val_loss", **changes})


def test_a_command_sweep_takes_free_param_names_and_the_metric_it_is_given() -> None:
    s = spec(space={**SPACE, "my_knob": {"type": "categorical", "choices": ["a", "b"]}})
    check_sweep_spec(s)
    assert s.command is not None and s.train is None
    assert s.objective == "val_loss" and not s.maximize


@pytest.mark.parametrize(
    ("metric", "maximize"),
    [("val_accuracy", True), ("roc_auc", True), ("val_loss", False), ("rmse", False), ("eval_r2", True)],
)
def test_the_default_direction_follows_the_metric_name(metric: str, maximize: bool) -> None:
    assert spec(metric=metric).maximize is maximize
    assert spec(metric=metric, direction="minimize").maximize is False


def test_a_command_sweep_without_a_metric_is_refused_naming_spec_metric() -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(metric=None))
    assert exc.value.details[0]["field"] == "spec.metric"
    assert "log_metric" in exc.value.message and "command" in exc.value.message


@pytest.mark.parametrize("doc", [{"train": TRAIN, "command": COMMAND}, {}])
def test_exactly_one_of_train_or_command(doc: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one of train"):
        SweepSpec.model_validate({"space": SPACE, "metric": "m", **doc})


def test_args_needs_a_command() -> None:
    with pytest.raises(pydantic.ValidationError, match="args"):
        SweepSpec.model_validate({"train": TRAIN, "space": {"lr": SPACE["lr"]}, "args": True})


@pytest.mark.parametrize(
    ("space", "why"),
    [
        ({"learning-rate": SPACE["lr"]}, "not a param name"),
        ({"lr": SPACE["lr"], "LR": SPACE["lr"]}, "AICLOUD_PARAM_LR"),
    ],
)
def test_param_names_are_identifiers_distinct_in_upper_case(space: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(space=space))
    assert exc.value.details[0]["field"].startswith("spec.space.") and why in exc.value.message


def test_a_grid_over_a_command_is_checked_as_for_train() -> None:
    with pytest.raises(ValidationError) as exc:
        check_sweep_spec(spec(sampler="grid"))
    assert exc.value.details[0]["field"] == "spec.sampler"
    check_sweep_spec(spec(sampler="grid", space={"layers": SPACE["layers"]}))


def test_the_trial_params_are_the_sampled_values_over_the_base_params() -> None:
    s = spec(command={**COMMAND, "params": {"epochs": 5, "lr": 0.5}})
    got = trial_params(s, {"lr": 0.01, "layers": 3})
    assert got == {"epochs": 5, "lr": 0.01, "layers": 3}
    assert trial_command(s, got) == "python train.py"
    with_args = spec(args=True)
    assert trial_command(with_args, {"lr": 0.01, "name": "a b", "hidden": [8, 4]}) == (
        "python train.py --lr=0.01 '--name=a b' '--hidden=[8, 4]'"
    )
    CommandSpec.model_validate({**COMMAND, "params": got})


def test_a_command_spec_refuses_a_param_name_that_is_no_identifier() -> None:
    with pytest.raises(pydantic.ValidationError):
        CommandSpec.model_validate({**COMMAND, "params": {"bad-name": 1}})


def test_params_reach_the_code_as_environment_variables_and_typed_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert param_env({}) == {}
    env = param_env({"lr": 0.001, "layers": 2, "opt": "adam", "relu": True, "hidden": [8, 4]})
    assert env["AICLOUD_PARAM_LR"] == "0.001" and env["AICLOUD_PARAM_LAYERS"] == "2"
    assert env["AICLOUD_PARAM_OPT"] == "adam" and env["AICLOUD_PARAM_RELU"] == "true"
    assert env["AICLOUD_PARAM_HIDDEN"] == "[8, 4]"
    monkeypatch.delenv("AICLOUD_PARAMS", raising=False)
    assert params() == {} and params({"lr": 0.1}, layers=1) == {"lr": 0.1, "layers": 1}
    monkeypatch.setenv("AICLOUD_PARAMS", env["AICLOUD_PARAMS"])
    got = params(lr=0.1, extra="x")
    assert got == {"lr": 0.001, "layers": 2, "opt": "adam", "relu": True, "hidden": [8, 4], "extra": "x"}
    monkeypatch.setenv("AICLOUD_PARAMS", "not json")
    with pytest.raises(ValueError, match="AICLOUD_PARAMS"):
        params()
    assert json.loads(param_env({"a": 1})["AICLOUD_PARAMS"]) == {"a": 1}


def test_a_command_sweeps_study_is_rebuilt_from_its_stored_trials() -> None:
    from datetime import UTC, datetime

    from aicloud.controllers.sweep_study import LiveStudy
    from aicloud.controllers.sweep_trials import TrialRecord
    from aicloud.entities import Job, JobKind, JobStatus
    from aicloud.schemas.sweeps import trial_name

    s = spec(space={**SPACE, "opt": {"type": "categorical", "choices": ["a", "b"]}}, pruner="asha")

    def record(number: int, params: dict[str, Any], value: float) -> TrialRecord:
        job = Job(
            id=f"job_{number}",
            workspace_id="ws",
            name=trial_name("s", number),
            kind=JobKind.COMMAND,
            spec={**COMMAND, "params": params},
            status=JobStatus.SUCCEEDED,
            priority=0,
            created_at=datetime.now(UTC),
        )
        return TrialRecord(
            number=number, job=job, params=params, state="complete", intermediate={1: value}, value=value
        )

    done = [
        record(0, {"lr": 0.01, "layers": 2, "opt": "b"}, 0.5),
        record(1, {"lr": 0.001, "layers": 4, "opt": "a"}, 0.2),
    ]
    live = LiveStudy.create(s, done)
    assert set(live.trial_ids) == {0, 1} and live.finished == {0, 1}
    assert live.study.best_trial.params == {"lr": 0.001, "layers": 4, "opt": "a"}
    sampled = live.ask(2)
    assert set(sampled) == {"lr", "layers", "opt"} and 1 <= sampled["layers"] <= 4
    assert trial_params(s, sampled) == sampled  # values as they are: no train-param mapping
