"""The Keras-style remote API (aicloud.Model, docs/keras.md "The remote API") against the real server:
seed 001's recommender on a multi-file dataset (fit, evaluate, predict, deploy), seeds 002 and 003's
MLP and CNN, and the bad input refused before any job runs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import aicloud
from aicloud import Client
from aicloud.errors import AicloudError, ValidationError

if importlib.util.find_spec("keras") is None:
    pytest.skip("pip install 'aicloud[keras]'", allow_module_level=True)
os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras' import: TensorFlow is not installed
import keras

N_USERS, N_ITEMS = 300, 200


def _ratings(tmp_path: Path) -> tuple[Path, Path]:
    """Ratings from user and item biases and latent factors plus noise, split into train.csv (3200
    rows) and test.csv (800)."""
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(N_USERS, 3)), rng.normal(size=(N_ITEMS, 3))
    bias_u, bias_i = rng.normal(size=N_USERS), rng.normal(size=N_ITEMS)
    u, i = rng.integers(0, N_USERS, 4000), rng.integers(0, N_ITEMS, 4000)
    factors = 0.3 * (users[u] * items[i]).sum(1)
    rating = 3 + bias_u[u] + bias_i[i] + factors + rng.normal(scale=0.2, size=4000)
    frame = pd.DataFrame({"user_id": u, "item_id": i, "rating": rating.round(3)})
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:3200].to_csv(train, index=False)
    frame.iloc[3200:].to_csv(test, index=False)
    return train, test


def _recommender() -> Any:
    user = keras.Input(shape=(1,), name="user_id")
    item = keras.Input(shape=(1,), name="item_id")
    u = keras.layers.Flatten()(keras.layers.Embedding(N_USERS, 8)(user))
    i = keras.layers.Flatten()(keras.layers.Embedding(N_ITEMS, 8)(item))
    x = keras.layers.Concatenate()([u, i])
    x = keras.layers.Dense(32, activation="relu")(x)
    return keras.Model([user, item], keras.layers.Dense(1)(x))


def test_seed_001_recommender_end_to_end(client: Client, tmp_path: Path, unique: Any) -> None:
    train_csv, test_csv = _ratings(tmp_path)
    parts = client.datasets.create(unique("ratings"), files=[train_csv, test_csv])
    train, test = parts["train"], parts["test"]
    assert train.name.endswith("-train") and train.num_rows == 3200 and test.num_rows == 800

    model = aicloud.Model(_recommender(), target="rating", name=unique("recommender"), client=client)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    history = model.fit(train, epochs=5, batch_size=64, validation_data=test, seed=1, timeout=600)
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(history.history), history.history
    assert history.epoch == [0, 1, 2, 3, 4]
    assert all(len(v) == 5 for v in history.history.values())
    test_ratings = pd.read_csv(test_csv)["rating"].to_numpy()
    baseline = np.abs(test_ratings - pd.read_csv(train_csv)["rating"].mean()).mean()  # the mean's MAE
    assert history.history["val_mae"][-1] < 0.85 * baseline, (baseline, history.history)

    _loss, mae = model.evaluate(test, timeout=600)
    assert abs(mae - history.history["val_mae"][-1]) < 1e-3
    assert set(model.evaluate(test, return_dict=True, timeout=600)) == {"loss", "mae"}

    preds = model.predict(test, timeout=600)
    assert isinstance(preds, np.ndarray) and preds.shape == (800, 1)
    assert np.abs(preds[:, 0] - test_ratings).mean() == pytest.approx(mae, abs=1e-3)  # rows in order

    dep = model.deploy(unique("recommender")).wait_ready(timeout=180)
    try:
        first = pd.read_csv(test_csv).iloc[0]
        answer = dep.predict([{"user_id": [int(first["user_id"])], "item_id": [int(first["item_id"])]}])
        assert np.asarray(answer, dtype=float).reshape(-1)[0] == pytest.approx(float(preds[0, 0]), abs=1e-3)
    finally:
        dep.delete()


def test_seed_002_and_003_through_the_remote_api(client: Client, tmp_path: Path, unique: Any) -> None:
    from sklearn.datasets import load_diabetes, load_digits

    diabetes = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(diabetes, index=False)
    mlp = keras.Sequential(
        [
            keras.Input(shape=(10,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model = aicloud.Model(mlp, target="target", client=client, name=unique("mlp"))
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(client.datasets.create(unique("diabetes"), diabetes), epochs=3, validation_split=0.2)
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(history.history)

    digits = tmp_path / "digits.csv"
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"}).iloc[:600]
    frame.to_csv(digits, index=False)
    cnn = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model = aicloud.Model(cnn, target="label", client=client, name=unique("cnn"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = client.datasets.create(unique("digits"), digits)
    history = model.fit(data, epochs=2, verbose=0)
    assert len(history.history["accuracy"]) == 2
    probs = model.predict(data)
    assert probs.shape == (600, 10)
    assert model.model_version is not None


def test_bad_input_is_refused_before_any_job(client: Client, tmp_path: Path, unique: Any) -> None:
    train_csv, _ = _ratings(tmp_path)
    data = client.datasets.create(unique("ratings"), train_csv)
    model = aicloud.Model(_recommender(), target="score", client=client)
    model.compile(optimizer="adam", loss="mse")
    before = len(client.jobs.list())
    with pytest.raises(ValidationError) as err:
        model.fit(data, epochs=1)
    assert err.value.details[0]["field"] == "spec.target" and "rating" in str(err.value)
    with pytest.raises(ValidationError) as err:
        client.jobs.submit(
            "keras", {"model_config": "not json", "datasets": {"train": data.ref}, "target": "rating"}
        )
    assert err.value.details[0]["field"] == "spec.model_config"
    spec = {"model_config": model.keras_model.to_json(), "target": "rating"}
    for bad, field in (
        ({"datasets": {"data": data.ref}}, "spec.datasets"),
        ({"datasets": {"train": "no-such-dataset"}}, "spec.datasets.train"),
        ({"datasets": {"train": data.ref}, "features": ["nope"]}, "spec.features"),
        ({"datasets": {"data": data.ref}, "action": "predict"}, "spec.weights"),
        ({"datasets": {"train": data.ref}, "pickle": True}, "spec.pickle"),
    ):
        with pytest.raises(ValidationError) as err:
            client.jobs.submit("keras", {**spec, **bad})
        assert err.value.details[0]["field"] == field, (bad, err.value.details)
    with pytest.raises(AicloudError, match="fit first"):
        model.predict(data)
    assert len(client.jobs.list()) == before


def test_a_failing_job_raises_with_its_log(client: Client, tmp_path: Path, unique: Any) -> None:
    """Two inputs not named after columns: the job fails, the error names it and shows its log."""
    train_csv, _ = _ratings(tmp_path)
    data = client.datasets.create(unique("ratings"), train_csv)
    a, b = keras.Input(shape=(1,), name="a"), keras.Input(shape=(1,), name="b")
    net = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    model = aicloud.Model(net, target="rating", client=client)
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(AicloudError) as err:
        model.fit(data, epochs=1, verbose=0, timeout=600)
    text = str(err.value)
    assert "failed" in text and "name each keras.Input after a column" in text and "user_id" in text, text
