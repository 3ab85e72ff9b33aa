"""The seed's Keras CNN (examples/keras/digits_cnn.py) on the TensorFlow backend, as it is, in a
command job whose runtime env installs tensorflow-cpu and tf2onnx (docs/keras.md): autolog logs its
epochs and ``save_model`` exports through tf2onnx an ONNX version that serves as the torch one does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aicloud import Client

EXAMPLE = Path(__file__).parents[2] / "examples" / "keras" / "digits_cnn.py"
TENSORFLOW = ["tensorflow-cpu==2.21.*", "tf2onnx"]
BUILD_TIMEOUT = 900  # a cold build downloads TensorFlow (~270 MB)


def test_the_digits_cnn_on_tensorflow_in_a_runtime_env(client: Client, tmp_path: Path, unique: Any) -> None:
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    path = tmp_path / "digits.csv"
    frame.to_csv(path, index=False)
    data = client.datasets.create(unique("digits"), path)
    name = unique("digits-tf")
    job = client.jobs.run(
        command='python -c \'import tensorflow, keras; print("backend", keras.backend.backend(), '
        "tensorflow.__version__)' && python digits_cnn.py",
        code=EXAMPLE,
        datasets={"train": f"{data.name}:{data.version}"},
        env={"EPOCHS": "5", "MODEL_NAME": name, "KERAS_BACKEND": "tensorflow"},
        runtime_env={"requirements": TENSORFLOW},
    ).wait(timeout=BUILD_TIMEOUT)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    assert "backend tensorflow 2.21." in logs, logs[-3000:]
    run = client.runs.get(job.run_id or "")
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert list(client.runs.metrics(run.id, metric)[metric]["steps"]) == list(range(5)), metric

    version = client.models.get(f"{name}:1")
    assert version.config["framework"]["backend"] == "tensorflow"
    assert version.signature["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 8, 8, 1]}]
    digits = load_digits()
    X = (digits.data[-200:] / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    probabilities = np.asarray(client.models.load(f"{name}:1")(X))
    assert probabilities.shape == (200, 10)
    assert float((probabilities.argmax(1) == digits.target[-200:]).mean()) > 0.8
    dep = client.deployments.create(name, model=f"{name}:1").wait_ready(timeout=180)
    try:
        answered = np.asarray(dep.predict(X[:3].tolist()))
        assert np.abs(answered - probabilities[:3]).max() < 1e-4
    finally:
        dep.delete()
