"""Choosing a built-in training job's input columns (``features`` / ``exclude``), through the real server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from aicloud import Client
from aicloud.client import DatasetVersion

from helpers import assert_error


@pytest.fixture
def with_id(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> tuple[DatasetVersion, DatasetVersion]:
    """A dataset with an ``id`` column (a row number: no signal) and a ``note`` string; split 80/20."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    frame = pd.DataFrame({"id": range(200), "a": x[:, 0], "b": x[:, 1], "note": ["n"] * 200})
    frame["label"] = (x[:, 0] + x[:, 1] > 0).astype(int)
    frame.to_csv(tmp_path / "ids.csv", index=False)
    ds = client.datasets.create(unique("feat"), tmp_path / "ids.csv")
    train, test = ds.split(train_size=0.8, seed=0, stratify="label")
    return train, test


def test_exclude_leaves_the_column_out_of_the_model_and_its_endpoint(
    client: Client, with_id: tuple[DatasetVersion, DatasetVersion], unique: Callable[[str], str]
) -> None:
    train, test = with_id
    name = unique("feat-model")
    job = client.jobs.train(
        task="tabular-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params={"epochs": 2},
        model_name=name,
        exclude=["id", "note"],
    )
    job.wait(timeout=180)
    assert job.status == "succeeded", job.logs()[-2000:]
    assert job.info.spec["exclude"] == ["id", "note"]
    model = client.models.load(f"{name}:1")
    assert [i["name"] for i in model.signature["inputs"]] == ["a", "b"]

    dep = client.deployments.create(unique("feat-dep"), model=f"{name}:1").wait_ready(timeout=120)
    try:
        assert len(dep.predict([{"a": 1.0, "b": 1.0}])) == 1  # no id, no note: the model never took them
        assert len(dep.predict([[1.0, 1.0]])) == 1
    finally:
        dep.delete()


def test_features_picks_the_columns(
    client: Client, with_id: tuple[DatasetVersion, DatasetVersion], unique: Callable[[str], str]
) -> None:
    train, test = with_id
    name = unique("feat-pick")
    job = client.jobs.train(
        task="tabular-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params={"epochs": 1},
        model_name=name,
        features=["b"],
    )
    job.wait(timeout=180)
    assert job.status == "succeeded", job.logs()[-2000:]
    assert [i["name"] for i in client.models.load(f"{name}:1").signature["inputs"]] == ["b"]


def test_unknown_or_conflicting_columns_are_422(
    http: httpx.Client, with_id: tuple[DatasetVersion, DatasetVersion]
) -> None:
    train, test = with_id
    base = {
        "task": "tabular-classification",
        "dataset": f"{train.name}:{train.version}",
        "eval_dataset": f"{test.name}:{test.version}",
        "target": "label",
    }

    def submit(kind: str, spec: dict[str, object]) -> httpx.Response:
        return http.post("/api/v1/jobs", json={"kind": kind, "spec": spec})

    err = assert_error(submit("train", {**base, "exclude": ["id", "nope", "zip"]}), 422, "validation_error")
    assert "spec.exclude" in err["message"] and "'nope', 'zip'" in err["message"] and "'id'" in err["message"]
    err = assert_error(submit("train", {**base, "features": ["a", "ghost"]}), 422, "validation_error")
    assert "spec.features" in err["message"] and "'ghost'" in err["message"]
    err = assert_error(submit("train", {**base, "features": ["a"], "exclude": ["id"]}), 422)
    assert "either `features`" in err["message"]
    err = assert_error(submit("train", {**base, "features": ["label"]}), 422)
    assert "target" in err["message"]
    err = assert_error(submit("train", {**base, "exclude": ["id", "a", "b", "note"]}), 422)
    assert "no feature column" in err["message"]
    sweep = {
        "train": {**base, "exclude": ["nope"]},
        "space": {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
    }
    err = assert_error(submit("sweep", sweep), 422)
    assert "spec.train.exclude" in err["message"] and "'nope'" in err["message"]
