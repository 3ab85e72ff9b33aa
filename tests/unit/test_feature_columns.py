"""The pure column choice of built-in training jobs: ``features`` / ``exclude`` against a schema."""

from __future__ import annotations

import pydantic
import pytest

from aicloud.errors import ValidationError
from aicloud.schemas.training import TrainSpec, feature_columns, image_shape_of
from aicloud.training.datasets import frame_columns

SCHEMA = [{"name": n, "dtype": "int64"} for n in ("id", "a", "b", "label")]


def spec(**kw: object) -> TrainSpec:
    return TrainSpec.model_validate(
        {"task": "tabular-classification", "dataset": "d", "eval_dataset": "e", "target": "label", **kw}
    )


def test_default_is_every_column_but_the_target() -> None:
    assert feature_columns(spec(), SCHEMA) == ["id", "a", "b"]


def test_features_and_exclude_keep_dataset_order() -> None:
    assert feature_columns(spec(features=["b", "a"]), SCHEMA) == ["a", "b"]
    assert feature_columns(spec(exclude=["id"]), SCHEMA) == ["a", "b"]


def test_features_and_exclude_are_exclusive() -> None:
    with pytest.raises(pydantic.ValidationError, match="either `features`"):
        spec(features=["a"], exclude=["id"])


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"exclude": ["nope"]}, "spec.exclude", "'nope'"),
        ({"features": ["a", "ghost"]}, "spec.features", "'ghost'"),
        ({"features": ["label"]}, "spec.features", "target"),
        ({"exclude": ["id", "a", "b"]}, "spec.exclude", "no feature column"),
    ],
)
def test_bad_choices_name_the_field(kw: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        feature_columns(spec(**kw), SCHEMA)
    assert field in info.value.message and words in info.value.message


def test_shaped_columns_flatten_and_shape_images() -> None:
    npz = [{"name": "X", "dtype": "float32", "shape": [2, 2]}, {"name": "i", "dtype": "int64"}]
    assert frame_columns(npz, ["X"]) == ["X_0_0", "X_0_1", "X_1_0", "X_1_1"]
    assert frame_columns(npz, ["i", "X"]) == ["X_0_0", "X_0_1", "X_1_0", "X_1_1", "i"]
    assert image_shape_of([*npz, {"name": "y", "dtype": "int64"}], "y", ["X"]) == [2, 2]
