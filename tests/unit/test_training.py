"""aicloud.training: job specs, preprocessing, and the built-in tasks on scikit-learn's bundled data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from aicloud.artifacts.loader import load_model
from aicloud.artifacts.preprocess import LabelEncoder, Preprocessor
from aicloud.errors import ValidationError
from aicloud.schemas.training import TASKS, CommandSpec, TrainParams, TrainSpec, check_train_spec
from aicloud.training.datasets import read_dataset
from aicloud.training.tasks import run_task

# ---------------------------------------------------------------------------------------------------------
# helpers


class ListTracker:
    def __init__(self) -> None:
        self.points: list[tuple[str, float, int | None]] = []

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.points.append((name, value, step))

    def series(self, name: str) -> list[float]:
        return [v for n, v, _ in self.points if n == name]


def split_csv(folder: Path, name: str, loader: Any, stratify: bool = True) -> tuple[Path, Path]:
    frame = loader(as_frame=True).frame.rename(columns={"target": "label"})
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    train, test = train_test_split(
        frame, train_size=0.8, random_state=0, stratify=frame["label"] if stratify else None
    )
    paths = folder / f"{name}-train.csv", folder / f"{name}-eval.csv"
    train.to_csv(paths[0], index=False)
    test.to_csv(paths[1], index=False)
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("data")
    return {
        "digits": split_csv(folder, "digits", load_digits),
        "bc": split_csv(folder, "bc", load_breast_cancer),
        "diabetes": split_csv(folder, "diabetes", load_diabetes, stratify=False),
    }


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


# ---------------------------------------------------------------------------------------------------------
# tasks


def test_digits_cnn_reaches_95_percent(data: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    tracker = ListTracker()
    s = spec("image-classification", epochs=8, batch_size=64, lr=2e-3)
    result = run_task(s, *data["digits"], tmp_path, tracker)
    assert result.metrics["eval_accuracy"] >= 0.95, result.metrics
    assert set(result.metrics) == {"eval_loss", "eval_accuracy"}
    for name in ("train_loss", "eval_loss", "eval_accuracy", "epoch_seconds", "samples_per_second"):
        assert len(tracker.series(name)) == 8, name
    assert [step for n, _, step in tracker.points if n == "train_loss"] == list(range(1, 9))
    model = load_model(result.model_dir)
    assert model.config["architecture"]["type"] == "cnn"
    assert model.config["preprocessing"]["image_shape"] == [8, 8]
    evaluation = pd.read_csv(data["digits"][1])
    accuracy = float((model(evaluation.drop(columns="label")) == evaluation["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(result.metrics["eval_accuracy"])


def test_breast_cancer_mlp_reaches_95_percent(data: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    result = run_task(spec(epochs=20, batch_size=32), *data["bc"], tmp_path)
    assert result.metrics["eval_accuracy"] >= 0.95, result.metrics
    assert load_model(result.model_dir).config["architecture"]["type"] == "mlp"


def test_regression_reports_rmse_r2_mae(data: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    tracker = ListTracker()
    result = run_task(
        spec("tabular-regression", epochs=20, batch_size=32), *data["diabetes"], tmp_path, tracker
    )
    assert set(result.metrics) == {"eval_loss", "eval_rmse", "eval_mae", "eval_r2"}
    assert 0 < result.metrics["eval_r2"] < 1 and result.metrics["eval_rmse"] > result.metrics["eval_mae"] > 0
    assert len(tracker.series("eval_rmse")) == 20
    model = load_model(result.model_dir)
    evaluation = pd.read_csv(data["diabetes"][1])
    pred = model(evaluation)
    assert pred.dtype == np.float64
    rmse = float(np.sqrt(((pred - evaluation["label"].to_numpy()) ** 2).mean()))
    assert rmse == pytest.approx(result.metrics["eval_rmse"], rel=1e-5)


def test_same_seed_same_metrics(data: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    def once(folder: str, seed: int) -> tuple[dict[str, float], list[Any]]:
        tracker = ListTracker()
        s = spec(epochs=3, batch_size=32, seed=seed, dropout=0.3)
        result = run_task(s, *data["bc"], tmp_path / folder, tracker)
        timing = ("epoch_seconds", "samples_per_second")
        return result.metrics, [p for p in tracker.points if p[0] not in timing]

    first, second, other = once("a", 7), once("b", 7), once("c", 8)
    assert first == second
    assert first[0] != other[0]
    weights = [(tmp_path / f / "model" / "model.safetensors").read_bytes() for f in "ab"]
    assert weights[0] == weights[1]


def test_early_stopping_keeps_the_best_weights(data: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    tracker = ListTracker()
    s = spec(epochs=200, batch_size=16, lr=1e-2, patience=2, dropout=0.0)
    result = run_task(s, *data["bc"], tmp_path, tracker)
    losses = tracker.series("eval_loss")
    assert len(losses) < 200  # stopped early
    assert result.metrics["eval_loss"] == min(losses)
    model = load_model(result.model_dir)
    assert model.config["training"]["best_epoch"] == losses.index(min(losses)) + 1


def test_categorical_features_and_holdout_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    colour = rng.choice(["red", "green", "blue"], n)
    x = rng.normal(size=n)
    label = np.where((colour == "red") | (x > 1.0), "yes", "no")
    pd.DataFrame({"colour": colour, "x": x, "label": label}).to_csv(tmp_path / "t.csv", index=False)
    result = run_task(spec(epochs=30, batch_size=32, lr=1e-2), tmp_path / "t.csv", None, tmp_path)
    assert result.metrics["eval_accuracy"] >= 0.9
    model = load_model(result.model_dir)
    assert model.config["labels"] == ["no", "yes"]
    assert model.config["preprocessing"]["onehot"] == {"colour": ["blue", "green", "red"]}
    assert model([{"colour": "red", "x": 0.0}, {"colour": "purple", "x": -2.0}]).tolist() == ["yes", "no"]
    proba = model.predict_proba([{"colour": "red", "x": 0.0}])
    assert proba.shape == (1, 2) and proba.sum() == pytest.approx(1.0)


def test_npz_images(tmp_path: Path) -> None:
    digits = load_digits()
    images = digits.images.astype(np.float32)
    np.savez(tmp_path / "train.npz", X=images[:1200], y=digits.target[:1200])
    np.savez(tmp_path / "eval.npz", X=images[1200:], y=digits.target[1200:])
    frame, schema = read_dataset(tmp_path / "train.npz")
    assert schema[0] == {"name": "X", "dtype": "float32", "shape": [8, 8]}
    assert list(frame.columns[:2]) == ["X_0_0", "X_0_1"] and frame.shape == (1200, 65)
    s = spec("image-classification", epochs=4, lr=2e-3).model_copy(update={"target": "y"})
    result = run_task(s, tmp_path / "train.npz", tmp_path / "eval.npz", tmp_path)
    assert result.metrics["eval_accuracy"] > 0.8
    model = load_model(result.model_dir)
    assert model(images[1200:1205].reshape(5, 64)).shape == (5,)


def test_missing_target_is_a_validation_error(data: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        run_task(spec().model_copy(update={"target": "nope"}), *data["bc"], tmp_path)
    assert info.value.details[0]["field"] == "spec.target"
