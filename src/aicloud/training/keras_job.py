"""The ``keras`` job (docs/keras.md, "The remote API"): what :class:`aicloud.Model` runs remotely.

The model is rebuilt from its JSON config with :func:`keras.saving.deserialize_keras_object` in safe
mode (a ``Lambda`` layer's code is refused, nothing is unpickled), compiled with the spec's settings,
and, by ``action``:

- ``fit``: trained on ``train`` (``validation`` as validation data) with
  :class:`aicloud.training.keras.MetricsCallback` (each epoch's loss and metrics on the run), its
  weights kept as a blob (a Keras ``.weights.h5``, digest in the run param ``keras_weights``) and the
  model registered as an ONNX version (:func:`aicloud.training.save_model`);
- ``evaluate``: ``model.evaluate`` on ``data`` with the trained ``weights``; the result
  (``{"names", "values"}`` JSON) is a blob named by the run param ``keras_result``;
- ``predict``: ``model.predict`` on ``data``; the predictions are a ``.npy`` blob (no pickle) named
  by ``keras_result``, rows in the dataset's order.

Features reach the inputs by :func:`feature_inputs`: inputs named after columns get those columns;
a single input gets every feature column, reshaped to its shape.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aicloud.errors import ValidationError
from aicloud.schemas.keras_job import RESULT_PARAM, WEIGHTS_PARAM, KerasSpec

if TYPE_CHECKING:
    from aicloud.training.env import WorkloadEnv
    from aicloud.training.session import Session

__all__ = ["feature_columns", "feature_inputs", "label_array", "run_keras"]

#: (name, shape with the batch axis first, e.g. (None, 8, 8, 1)) of each model input, in order.
InputSpec = tuple[str, Sequence[int | None]]


def _print(line: str) -> None:
    print(f"[aicloud] {line}", flush=True)


def feature_columns(frame: pd.DataFrame, target: str | None, features: Sequence[str] | None) -> list[str]:
    """``features`` if given, else every column but the target."""
    if features:
        return list(features)
    return [str(c) for c in frame.columns if str(c) != target]


def _as_array(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return values.astype("float32")
    if values.dtype.kind in "iub":
        return values.astype("int64") if values.dtype.kind != "b" else values.astype("float32")
    try:
        return values.astype("float32")
    except (TypeError, ValueError):
        raise ValidationError.field("spec.features", "feature columns must be numeric") from None


def _reshape(values: np.ndarray, shape: Sequence[int | None], name: str, what: str) -> np.ndarray:
    rest = list(shape[1:])
    width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
    dims = [int(d) for d in rest if d is not None]
    if len(dims) != len(rest):  # a free axis: the values as they are
        return values if values.ndim > 1 or not rest else values.reshape(len(values), 1)
    want = math.prod(dims)
    if want != width:
        raise ValidationError.field(
            "spec.features",
            f"input {name!r} takes shape {tuple(dims)} ({want} values a row); {what} give(s) {width}",
        )
    return values.reshape(len(values), *dims)


def feature_inputs(
    inputs: Sequence[InputSpec], frame: pd.DataFrame, target: str | None, features: Sequence[str] | None
) -> np.ndarray | dict[str, np.ndarray]:
    """The model's inputs from a table: a dict by input name when every input is named after a
    column (each reshaped to its input's shape), else, for a single input, the feature columns as one
    array reshaped to the input's shape (64 columns → 8x8x1). Anything else is a ValidationError."""
    columns = {str(c) for c in frame.columns}
    if inputs and all(name in columns for name, _ in inputs):
        return {
            name: _reshape(_as_array(frame[name].to_numpy()), shape, name, f"column {name!r}")
            for name, shape in inputs
        }
    if len(inputs) != 1:
        names = ", ".join(repr(n) for n, _ in inputs)
        raise ValidationError.field(
            "spec.features",
            f"the model has inputs {names}: name each keras.Input after a column of the dataset "
            f"(its columns: {', '.join(sorted(columns)[:12])})",
        )
    name, shape = inputs[0]
    cols = feature_columns(frame, target, features)
    missing = [c for c in cols if c not in columns]
    if missing:
        raise ValidationError.field("spec.features", f"the dataset has no column(s) {missing[:5]}")
    values = _as_array(frame[cols].to_numpy())
    return _reshape(values, shape, name, f"{len(cols)} feature column(s)")


def label_array(frame: pd.DataFrame, target: str) -> np.ndarray:
    """The label column: float32 for real values, integers as they are (sparse class labels)."""
    if target not in frame.columns:
        raise ValidationError.field("spec.target", f"the dataset has no column {target!r}")
    values = frame[target].to_numpy()
    return values.astype("float32") if values.dtype.kind == "f" else values


def _model_inputs(model: Any) -> list[InputSpec]:
    out: list[InputSpec] = []
    for i, tensor in enumerate(getattr(model, "inputs", None) or []):
        name = str(getattr(tensor, "name", "") or f"input_{i}").split(":")[0]
        out.append((name, tuple(tensor.shape)))
    if not out:
        raise ValidationError.field(
            "spec.model_config", "the model has no inputs: start it with keras.Input(shape=...)"
        )
    return out


def _deserialize(value: Any) -> Any:
    import keras

    return keras.saving.deserialize_keras_object(value, safe_mode=True) if isinstance(value, dict) else value


def build_model(spec: KerasSpec) -> Any:
    """The compiled model from the spec's JSON config (safe mode: no code deserialized)."""
    import keras

    if spec.fit.seed is not None:
        keras.utils.set_random_seed(spec.fit.seed)
    model = keras.saving.deserialize_keras_object(json.loads(spec.model_config_json), safe_mode=True)
    model.compile(
        optimizer=_deserialize(spec.compile.optimizer),
        loss=_deserialize(spec.compile.loss),
        metrics=[_deserialize(m) for m in spec.compile.metrics] or None,
    )
    return model


def _data(model: Any, spec: KerasSpec, path: Path, fmt: str, labels: bool) -> tuple[Any, Any, int]:
    from aicloud.training.datasets import read_dataset

    frame, _ = read_dataset(path, fmt)
    x = feature_inputs(_model_inputs(model), frame, spec.target, spec.features)
    y = label_array(frame, spec.target) if labels and spec.target else None
    return x, y, len(frame)


def _upload(sess: Session, data: bytes, param: str) -> str:
    digest = sess.client.blobs.upload(data)
    sess.log_params({param: digest})
    return digest


def _example(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: v[:2] for k, v in x.items()}
    return x[:2]


def run_keras(sess: Session, env: WorkloadEnv, paths: dict[str, Path], output: Path) -> int:
    from aicloud.training.keras import default_backend

    default_backend()
    spec = KerasSpec.model_validate(env.job.spec)
    resolved = spec.resolved_datasets or {}
    formats = {role: str((resolved.get(role) or {}).get("format") or "") or None for role in paths}
    model = build_model(spec)
    if spec.weights:
        weights = output / "initial.weights.h5"
        _, digest = sess.client.blobs.fetch(spec.weights, weights)
        if digest != spec.weights:
            raise ValidationError.field("spec.weights", "the weights blob does not match its digest")
        model.load_weights(weights)
        _print(f"weights from blob {spec.weights[:12]}")
    if spec.action == "fit":
        return _fit(sess, env, spec, model, paths, formats, output)
    x, y, rows = _data(model, spec, paths["data"], formats.get("data") or "csv", spec.action == "evaluate")
    if spec.action == "evaluate":
        result = model.evaluate(x, y, batch_size=spec.batch_size, return_dict=True, verbose=2)
        body = {"names": list(result), "values": [float(v) for v in result.values()]}
        _upload(sess, json.dumps(body).encode(), RESULT_PARAM)
        for name, value in zip(body["names"], body["values"], strict=True):
            sess.log_metric(f"eval_{name}", value, step=0)
        _print(f"evaluate on {rows} rows: {json.dumps(result, default=float)}")
    else:
        preds = np.asarray(model.predict(x, batch_size=spec.batch_size, verbose=2))
        buffer = io.BytesIO()
        np.save(buffer, preds, allow_pickle=False)
        _upload(sess, buffer.getvalue(), RESULT_PARAM)
        _print(f"predict: {preds.shape} predictions for {rows} rows")
    sess.flush()
    return 0


def _fit(
    sess: Session,
    env: WorkloadEnv,
    spec: KerasSpec,
    model: Any,
    paths: dict[str, Path],
    formats: dict[str, str | None],
    output: Path,
) -> int:
    from aicloud.training.keras import MetricsCallback

    if "train" not in paths:
        raise ValidationError.field("spec.datasets", "no training dataset was resolved for this job")
    x, y, rows = _data(model, spec, paths["train"], formats.get("train") or "csv", True)
    validation = None
    if "validation" in paths:
        vx, vy, _ = _data(model, spec, paths["validation"], formats.get("validation") or "csv", True)
        validation = (vx, vy)
    sess.log_params(
        {
            "epochs": spec.fit.epochs,
            "batch_size": spec.fit.batch_size or 32,
            "optimizer": json.dumps(spec.compile.optimizer),
            "loss": json.dumps(spec.compile.loss),
            "target": spec.target,
            "rows": rows,
        }
    )
    model.fit(
        x,
        y,
        epochs=spec.fit.epochs,
        batch_size=spec.fit.batch_size,
        validation_data=validation,
        validation_split=spec.fit.validation_split if validation is None else 0.0,
        shuffle=spec.fit.shuffle,
        callbacks=[MetricsCallback()],
        verbose=2,
    )
    sess.flush()
    weights = output / "model.weights.h5"
    model.save_weights(weights)
    digest = _upload(sess, weights.read_bytes(), WEIGHTS_PARAM)
    _print(f"trained weights: blob {digest[:12]} ({weights.stat().st_size} bytes)")
    config = {"target": spec.target, "keras": {"features": spec.features}}
    sess.save_model(model, name=spec.model_name or env.job.name, example_input=_example(x), config=config)
    return 0
