"""aicloud.training: the built-in tasks train on scikit-learn's bundled data (real training runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from aicloud.artifacts.loader import load_model
from aicloud.errors import ValidationError
from aicloud.schemas.training import TrainParams, TrainSpec
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
