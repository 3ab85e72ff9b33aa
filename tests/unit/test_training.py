"""aicloud.training: job specs and preprocessing (the built-in tasks train in
tests/integration/test_training_tasks.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest

from aicloud.artifacts.preprocess import LabelEncoder, Preprocessor
from aicloud.errors import ValidationError
from aicloud.schemas.training import TASKS, CommandSpec, TrainParams, TrainSpec, check_train_spec

# ---------------------------------------------------------------------------------------------------------
# helpers


def spec(task: str = "tabular-classification", **params: Any) -> TrainSpec:
    return TrainSpec(
        task=task, dataset="d:1", eval_dataset="e:1", target="label", params=TrainParams(**params)
    )


# ---------------------------------------------------------------------------------------------------------
# specs


def test_train_params_defaults_and_bounds() -> None:
    p = TrainParams()
    assert (p.epochs, p.batch_size, p.lr, p.optimizer, p.hidden) == (10, 64, 1e-3, "adam", [128, 64])
    assert (p.dropout, p.seed, p.patience, p.weight_decay) == (0.1, 0, 0, 0.0)
    for bad in (
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0},
        {"dropout": 1.0},
        {"optimizer": "rmsprop"},
        {"patience": -1},
        {"weight_decay": -0.1},
        {"hidden": [0]},
        {"epoch": 5},
    ):
        with pytest.raises(pydantic.ValidationError) as info:
            TrainParams.model_validate(bad)
        assert info.value.errors()[0]["loc"][0] == next(iter(bad)), bad


def test_unknown_task_lists_the_tasks() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        TrainSpec.model_validate({"task": "chat", "dataset": "d", "eval_dataset": "e"})
    err = info.value.errors()[0]
    assert err["loc"] == ("task",)
    for task in TASKS:
        assert task in err["msg"]


def test_train_spec_refuses_unknown_fields_and_keeps_resolved_datasets() -> None:
    with pytest.raises(pydantic.ValidationError):
        TrainSpec.model_validate({"task": TASKS[0], "dataset": "d", "eval_dataset": "e", "epochs": 3})
    s = TrainSpec.model_validate(
        {
            "task": TASKS[0],
            "dataset": "d",
            "eval_dataset": "e",
            "resolved_datasets": {"train": {"id": "x", "name": "d", "version": 2, "format": "csv"}},
        }
    )
    assert s.resolved_datasets is not None and s.resolved_datasets["train"].version == 2
    assert s.cpus == 1 and s.secrets == [] and s.model_name is None and s.target == "label"


def test_command_spec_validation() -> None:
    ok = CommandSpec.model_validate(
        {"command": "python t.py", "datasets": {"train": "d:1"}, "env": {"K": "V"}}
    )
    assert ok.code is None and ok.cpus == 1
    for bad, field in (
        ({"command": "  "}, "command"),
        ({"command": "x", "env": {"AICLOUD_TOKEN": "t"}}, "env"),
        ({"command": "x", "env": {"1BAD": "t"}}, "env"),
        ({"command": "x", "datasets": {"bad-role": "d"}}, "datasets"),
        ({"command": "x", "code": "not-a-digest"}, "code"),
        ({"command": "x", "secrets": ["bad name"]}, "secrets"),
    ):
        with pytest.raises(pydantic.ValidationError) as info:
            CommandSpec.model_validate(bad)
        assert info.value.errors()[0]["loc"][0] == field


SCHEMA: list[dict[str, Any]] = [{"name": f"pixel_{i}", "dtype": "float64"} for i in range(64)] + [
    {"name": "label", "dtype": "int64"}
]


def test_check_train_spec_errors_name_the_target() -> None:
    check_train_spec(spec("image-classification"), SCHEMA, {"label": {"distinct": 10}})
    check_train_spec(spec("tabular-regression"), SCHEMA, None)

    def error(s: TrainSpec, schema: list[dict[str, Any]], stats: Any = None) -> str:
        with pytest.raises(ValidationError) as info:
            check_train_spec(s, schema, stats)
        assert info.value.details[0]["field"] == "spec.target"
        return info.value.message

    assert "'nope' is not in dataset" in error(spec().model_copy(update={"target": "nope"}), SCHEMA)
    text = [{"name": "x", "dtype": "float64"}, {"name": "label", "dtype": "string"}]
    assert "regression needs a numeric target" in error(spec("tabular-regression"), text)
    msg = error(spec("image-classification"), SCHEMA[1:])  # 63 pixel columns
    assert "63" in msg and "square" in msg
    mixed = [*SCHEMA[:63], {"name": "colour", "dtype": "string"}, SCHEMA[-1]]
    assert "'colour'" in error(spec("image-classification"), mixed)
    assert "1 distinct" in error(spec(), SCHEMA, {"label": {"distinct": 1, "distinct_approx": False}})
    assert "too many classes" in error(spec(), SCHEMA, {"label": {"distinct": 5000}})
    npz: list[dict[str, Any]] = [
        {"name": "X", "dtype": "uint8", "shape": [28, 28]},
        {"name": "y", "dtype": "int64", "shape": []},
    ]
    check_train_spec(spec("image-classification").model_copy(update={"target": "y"}), npz, None)


# ---------------------------------------------------------------------------------------------------------
# preprocessing


def test_preprocessing_is_fitted_on_train_only() -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"], "k": [5, 5, 5]})
    evaluation = pd.DataFrame({"x": [100.0, 200.0], "c": ["z", None], "k": [7, 5]})
    pre = Preprocessor.fit(train, ["x", "c", "k"])
    assert pre.standardize["x"] == pytest.approx([2.0, np.std([1.0, 2.0, 3.0])])
    assert pre.standardize["k"] == [5.0, 1.0]  # std 0 → 1
    assert pre.onehot["c"] == ["a", "b"]
    out = pre.transform(evaluation)
    assert out.dtype == np.float32 and out.shape == (2, 4)  # x, c=a, c=b, k
    assert out[0, 0] == pytest.approx((100.0 - 2.0) / np.std([1.0, 2.0, 3.0]), rel=1e-6)
    assert out[:, 1:3].tolist() == [[0, 0], [0, 0]]  # unseen and missing categories: all zeros
    assert out[:, 3].tolist() == [2.0, 0.0]
    # the fitted state survives JSON
    again = Preprocessor.from_config(pre.to_config())
    assert np.array_equal(again.transform(evaluation), out)


def test_label_encoder_round_trip() -> None:
    cases: list[list[Any]] = [["cat", "dog", "cat", "bird"], [3, 1, 2, 3], [0.5, 1.5, 0.5]]
    for values in cases:
        enc = LabelEncoder.fit(pd.Series(values))
        assert enc.labels == sorted(set(values))
        idx = enc.encode(pd.Series(values))
        assert enc.decode(idx).tolist() == values
    enc = LabelEncoder.fit(pd.Series(["a", "b"]))
    assert enc.encode(pd.Series(["b", "zzz", None])).tolist() == [1, -1, -1]
