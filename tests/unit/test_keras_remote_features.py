"""The feature → input mapping of the ``keras`` job (aicloud.training.keras_job, docs/keras.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aicloud.errors import ValidationError
from aicloud.training.keras_job import feature_columns, feature_inputs, label_array


def _ratings() -> pd.DataFrame:
    return pd.DataFrame({"user_id": [1, 2, 3], "item_id": [4, 5, 6], "rating": [1.5, 2.0, 3.5]})


def test_inputs_named_after_columns_get_those_columns() -> None:
    x = feature_inputs([("user_id", (None, 1)), ("item_id", (None, 1))], _ratings(), "rating", None)
    assert isinstance(x, dict) and sorted(x) == ["item_id", "user_id"]
    assert x["user_id"].shape == (3, 1) and x["user_id"].dtype == np.int64
    assert x["item_id"][:, 0].tolist() == [4, 5, 6]


def test_a_single_input_gets_every_feature_column_reshaped() -> None:
    frame = pd.DataFrame(np.arange(6 * 65).reshape(6, 65), columns=[f"p{i}" for i in range(64)] + ["label"])
    x = feature_inputs([("input", (None, 8, 8, 1))], frame, "label", None)
    assert isinstance(x, np.ndarray) and x.shape == (6, 8, 8, 1) and x.dtype == np.int64
    assert x[1, 0, 1, 0] == 66  # row 1, column p1


def test_a_single_flat_input_and_features() -> None:
    frame = _ratings().astype(float)
    x = feature_inputs([("dense_input", (None, 2))], frame, "rating", None)
    assert isinstance(x, np.ndarray) and x.shape == (3, 2) and x.dtype == np.float32
    one = feature_inputs([("x", (None, 1))], frame, "rating", ["item_id"])
    assert isinstance(one, np.ndarray) and one[:, 0].tolist() == [4.0, 5.0, 6.0]
    assert feature_columns(frame, "rating", None) == ["user_id", "item_id"]


def test_a_shape_mismatch_and_unnamed_inputs_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"takes shape \(3,\).*give\(s\) 2"):
        feature_inputs([("x", (None, 3))], _ratings(), "rating", None)
    with pytest.raises(ValidationError, match=r"name each keras\.Input after a column"):
        feature_inputs([("a", (None, 1)), ("b", (None, 1))], _ratings(), "rating", None)
    with pytest.raises(ValidationError, match="no column"):
        feature_inputs([("x", (None, 1))], _ratings(), "rating", ["nope"])


def test_labels() -> None:
    assert label_array(_ratings(), "rating").dtype == np.float32
    assert label_array(pd.DataFrame({"y": [0, 1]}), "y").dtype.kind == "i"
    with pytest.raises(ValidationError, match=r"no column"):
        label_array(_ratings(), "nope")
