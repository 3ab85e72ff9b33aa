"""The evaluate job's pure parts: which metrics a version gets, their values, and chunked reading and
writing (CSV, Parquet, JSON Lines, NPZ) keeping every row in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aicloud.schemas.evaluation import metric_key
from aicloud.training.batch_predict import ChunkWriter, output_frame
from aicloud.training.evaluate import (
    choose_kind,
    classification_metrics,
    iter_chunks,
    regression_metrics,
)


def test_the_kind_comes_from_labels_task_or_outputs() -> None:
    assert choose_kind({"labels": [0, 1]}, False) == "classification"
    assert choose_kind({"task": "tabular-classification"}, False) == "classification"
    assert choose_kind({"task": "image-classification"}, False) == "classification"
    assert choose_kind({"output": "probabilities"}, False) == "classification"
    assert choose_kind({}, True) == "classification"  # a raw output of several columns
    assert choose_kind({"task": "tabular-regression"}, False) == "regression"
    assert choose_kind({}, False) == "regression"


def test_binary_classification_metrics_use_the_positive_class() -> None:
    truth = np.array(["no", "yes", "yes", "no"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    pred = np.array(["no", "yes", "no", "yes"])
    out = classification_metrics(truth, pred, proba, ["no", "yes"])
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["f1_macro"] == pytest.approx(0.5)
    assert out["roc_auc"] == pytest.approx(0.75)  # yes scores 0.8, 0.4; no scores 0.1, 0.7


def test_multiclass_roc_auc_is_one_vs_rest_and_labels_match_across_types() -> None:
    truth = np.array([0.0, 1.0, 2.0, 2.0])  # a CSV column read as floats
    proba = np.eye(3)[[0, 1, 2, 2]] * 0.9 + 0.1 / 3
    out = classification_metrics(truth, np.array([0, 1, 2, 2]), proba, [0, 1, 2])
    assert out == {"accuracy": 1.0, "f1_macro": 1.0, "roc_auc": 1.0}


def test_a_single_class_in_the_data_has_no_roc_auc() -> None:
    out = classification_metrics(
        np.array([1, 1]), np.array([1, 0]), np.array([[0.2, 0.8], [0.6, 0.4]]), [0, 1]
    )
    assert out["accuracy"] == 0.5 and "roc_auc" not in out


def test_regression_metrics() -> None:
    out = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 6.0])
    assert out["rmse"] == pytest.approx(1.0)
    assert out["mae"] == pytest.approx(0.5)
    assert out["r2"] == pytest.approx(1 - 4 / 5)
    assert "r2" not in regression_metrics([2.0, 2.0], [1.0, 3.0])


def test_metric_keys_name_the_dataset_version() -> None:
    assert metric_key("iris-test", 3, "accuracy") == "eval:iris-test:3:accuracy"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "npz"])
def test_chunks_round_trip_in_order(tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame({"id": np.arange(2503), "x": np.linspace(0, 1, 2503)})
    src = tmp_path / f"in.{fmt}"
    writer = ChunkWriter(src, fmt)
    for start in range(0, len(frame), 1000):
        writer.write(frame.iloc[start : start + 1000])
    writer.close()
    chunks = list(iter_chunks(src, fmt, 700))
    assert [len(c) for c in chunks] == [700, 700, 700, 403]
    back = pd.concat(chunks, ignore_index=True)
    assert back["id"].tolist() == list(range(2503))
    assert np.allclose(back["x"].to_numpy(), frame["x"].to_numpy())


def test_output_frame_adds_prediction_and_probabilities() -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    out = output_frame(frame, np.array(["x", "y"]), np.array([[0.7, 0.3], [0.1, 0.9]]), ["x", "y"])
    assert list(out.columns) == ["a", "prediction", "proba_x", "proba_y"]
    assert out["prediction"].tolist() == ["x", "y"]
