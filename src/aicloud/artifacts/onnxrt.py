"""ONNX Runtime sessions of aicloud models, without torch: :func:`onnx_runner` (what
:func:`aicloud.artifacts.loader.load_model` runs an ONNX model with, and a replica serving ONNX)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.errors import ValidationError

Features = np.ndarray | Mapping[str, np.ndarray]


_ONNX_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def max_abs_diff(got: Any, want: Any) -> float:
    """The largest absolute difference between two outputs (compared in float64): ``inf`` when their
    shapes differ, NaN when either has a NaN or an infinity (``not diff <= tolerance`` refuses both);
    what every check of an export against its source model measures."""
    a, b = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def onnx_runner(model: Path | bytes, threads: int | None = None) -> Callable[[Features], np.ndarray]:
    """An ONNX Runtime session (CPU) of ``model`` (a file, or the model's bytes) as a function of
    features; ``threads`` as :func:`load_model` takes it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"]
    )
    dtypes = {i.name: _ONNX_DTYPES.get(i.type, np.float32) for i in session.get_inputs()}
    first = session.get_inputs()[0].name

    def run(x: Features) -> np.ndarray:
        feed = x if isinstance(x, Mapping) else {first: x}
        missing = [name for name in dtypes if name not in feed]
        if missing:
            raise ValidationError.field("inputs", f"missing input(s) {missing} of the ONNX model")
        arrays = {name: np.asarray(feed[name]).astype(dtypes[name], copy=False) for name in dtypes}
        return np.asarray(session.run(None, arrays)[0])

    return run
