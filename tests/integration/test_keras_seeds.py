"""The seeds' Keras scripts (examples/keras/) as command jobs against the real server, on the torch
backend (docs/keras.md): per-epoch metrics arrive by autolog without a line in the script, and the
CNN's ``save_model`` registers an ONNX version that a deployment serves."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aicloud import Client

if importlib.util.find_spec("keras") is None:  # not imported here: its default backend is TensorFlow
    pytest.skip("pip install 'aicloud[keras]'", allow_module_level=True)

EXAMPLES = Path(__file__).parents[2] / "examples" / "keras"


def _csv(tmp_path: Path, name: str) -> Path:
    from sklearn.datasets import load_diabetes, load_digits

    if name == "diabetes":
        frame = load_diabetes(as_frame=True).frame
    else:
        frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def _steps(client: Client, run_id: str, name: str) -> list[int]:
    return list(client.runs.metrics(run_id, name)[name]["steps"])


def test_the_regression_seed_logs_every_epoch(client: Client, tmp_path: Path, unique: Any) -> None:
    """Seed 002 (Dense 64/128/1, adam, mse, mae, validation_split 0.2) on the diabetes CSV."""
    data = client.datasets.create(unique("diabetes"), _csv(tmp_path, "diabetes"))
    job = client.jobs.run(
        command="python regression_mlp.py",
        code=EXAMPLES / "regression_mlp.py",
        datasets={"train": f"{data.name}:{data.version}"},
        env={"EPOCHS": "4"},
    ).wait(timeout=600)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    assert "test mae" in logs and "[aicloud] warning" not in logs, logs[-3000:]
    run = client.runs.get(job.run_id or "")
    for metric in ("loss", "mae", "val_loss", "val_mae"):
        assert _steps(client, run.id, metric) == [0, 1, 2, 3], metric
    assert run.params["epochs"] == 4 and run.params["optimizer"] == "Adam" and run.params["loss"] == "mse"


def test_autolog_is_off_with_aicloud_autolog_0(client: Client, tmp_path: Path, unique: Any) -> None:
    data = client.datasets.create(unique("diabetes"), _csv(tmp_path, "diabetes"))
    job = client.jobs.run(
        command="python regression_mlp.py",
        code=EXAMPLES / "regression_mlp.py",
        datasets={"train": f"{data.name}:{data.version}"},
        env={"EPOCHS": "1", "AICLOUD_AUTOLOG": "0"},
    ).wait(timeout=600)
    assert job.status == "succeeded", job.logs()[-3000:]
    assert "loss" not in client.runs.metrics(job.run_id or "", "loss")


def test_the_digits_cnn_seed_registers_an_onnx_version_that_serves(
    client: Client, tmp_path: Path, unique: Any
) -> None:
    """Seed 003 (Conv2D/MaxPooling2D/Flatten/Dense, sparse categorical crossentropy) on the digits
    CSV; its save_model line registers an ONNX version: loaded and served, it predicts the digits."""
    data = client.datasets.create(unique("digits"), _csv(tmp_path, "digits"))
    name = unique("digits-keras")
    job = client.jobs.run(
        command="python digits_cnn.py",
        code=EXAMPLES / "digits_cnn.py",
        datasets={"train": f"{data.name}:{data.version}"},
        env={"EPOCHS": "6", "MODEL_NAME": name},
    ).wait(timeout=600)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    assert "TracerWarning" not in logs, logs[-3000:]
    run = client.runs.get(job.run_id or "")
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert _steps(client, run.id, metric) == list(range(6)), metric
    assert run.summary["val_accuracy"] > 0.8, run.summary

    version = client.models.get(f"{name}:1")
    assert version.lineage.get("job_id") == job.id, version.lineage
    assert version.config["framework"]["name"] == "keras"
    assert version.config["framework"]["backend"] == "torch"
    assert version.signature["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 8, 8, 1]}]
    assert version.metrics["accuracy"] > 0.8 and "val_loss" in version.metrics

    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.data[-200:] / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    y = digits.target[-200:]
    probabilities = np.asarray(client.models.load(f"{name}:1")(X))
    assert probabilities.shape == (200, 10)
    assert float((probabilities.argmax(1) == y).mean()) > 0.8

    dep = client.deployments.create(name, model=f"{name}:1").wait_ready(timeout=180)
    try:
        rows = X[:4].tolist()  # rows nested 8 x 8 x 1
        answered = np.asarray(dep.predict(rows))
        assert answered.shape == (4, 10)
        assert np.abs(answered - probabilities[:4]).max() < 1e-4
        flat = np.asarray(dep.predict(X[:4].reshape(4, 64).tolist()))  # or flat rows of 64 values
        assert np.abs(flat - answered).max() < 1e-6
    finally:
        dep.delete()
