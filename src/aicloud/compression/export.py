"""ONNX export of a built-in model (safetensors + JSON), checked against its parent.

The built-in architectures (:mod:`aicloud.artifacts.architectures`) take one float32 tensor: the
preprocessed features of a row (``(rows, in_features)``; the CNN's flat pixels, reshaped inside).
:func:`export_onnx` rebuilds the module from ``config.json`` and its weights (no unpickling), exports
it with :func:`aicloud.artifacts.format.save_onnx` (dynamic batch axis) and runs both on
:func:`example_inputs`. The export is kept only when the largest absolute difference of any output
is within the tolerance (:data:`TOLERANCE` unless the caller asks for a stricter one); otherwise it
is refused with a :class:`~aicloud.errors.ValidationError` naming the difference.

Imports torch and ONNX Runtime: it runs in the compression worker, never in the control plane.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.artifacts.format import ONNX, read_config
from aicloud.artifacts.inputs import signature_examples
from aicloud.artifacts.onnxrt import max_abs_diff
from aicloud.errors import ConflictError, InvalidDataError, ValidationError

#: the largest absolute difference of any output, parent against ONNX, that an export may have
TOLERANCE = 1e-4
EXAMPLE_ROWS = 32
EXAMPLE_SEED = 0


def is_onnx(folder: Path, config: dict[str, Any]) -> bool:
    architecture = config.get("architecture")
    kind = architecture.get("type") if isinstance(architecture, dict) else None
    return kind == "onnx" or (kind is None and (folder / ONNX).exists())


def feature_width(config: dict[str, Any]) -> int:
    """How many float32 features one row of a built-in model's input has."""
    arch = config.get("architecture") or {}
    try:
        if arch.get("type") == "mlp":
            return int(arch["in_features"])
        if arch.get("type") == "cnn":
            return int(np.prod([int(s) for s in arch["image_shape"]]))
    except (KeyError, TypeError, ValueError):
        pass
    raise InvalidDataError(f"config.json: cannot tell the input of architecture {arch.get('type')!r}")


def example_inputs(config: dict[str, Any], rows: int = EXAMPLE_ROWS, seed: int = EXAMPLE_SEED) -> np.ndarray:
    """Example inputs built from the model's signature: ``rows`` rows of the model's input tensor,
    drawn from a standard normal with a fixed seed (the built-in preprocessing standardizes numbers
    and one-hot encodes categories, so values of this scale are what the model sees)."""
    gen = np.random.default_rng(seed)
    return gen.standard_normal((rows, feature_width(config))).astype(np.float32)


_ONNX_FLOATS = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def example_feed(folder: Path, config: dict[str, Any], rows: int = EXAMPLE_ROWS) -> Any:
    """Example inputs of any model folder: :func:`example_inputs` for a built-in one; for an ONNX
    model, the examples its signature keeps (what it was exported with, repeated to ``rows`` rows),
    else each input at its declared shape (the batch and other free dimensions: ``rows``, 1),
    floats from a standard normal, integers zero. One array, or a dict by name for several inputs."""
    if not is_onnx(folder, config):
        return example_inputs(config, rows)
    kept = signature_examples(config, rows)
    if kept:
        return next(iter(kept.values())) if len(kept) == 1 else kept
    import onnxruntime as ort

    gen = np.random.default_rng(EXAMPLE_SEED)
    session = ort.InferenceSession(str(folder / ONNX), providers=["CPUExecutionProvider"])
    feed: dict[str, np.ndarray] = {}
    for i in session.get_inputs():
        shape = [
            d if isinstance(d, int) and d > 0 else (rows if n == 0 else 1) for n, d in enumerate(i.shape)
        ]
        if i.type in _ONNX_FLOATS:
            feed[i.name] = gen.standard_normal(shape).astype(_ONNX_FLOATS[i.type])
        else:
            feed[i.name] = np.zeros(shape, dtype=np.int64 if "int64" in i.type else np.int32)
    return next(iter(feed.values())) if len(feed) == 1 else feed


def export_onnx(
    parent: Path, out: Path, *, tolerance: float = TOLERANCE, derived: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the ONNX export of the built-in model in ``parent`` to ``out``; returns what was checked
    (``max_abs_diff``, ``examples``, ``tolerance``).

    Raises:
        ConflictError: the model is ONNX already.
        ValidationError: the outputs differ by more than ``tolerance`` (nothing is kept).
    """
    import torch

    from aicloud.artifacts.format import save_onnx
    from aicloud.artifacts.loader import load_model

    config = read_config(parent)
    if is_onnx(parent, config):
        raise ConflictError("the model is ONNX already (model.onnx); there is nothing to export")
    model = load_model(parent)
    assert model.module is not None
    x = example_inputs(config)
    expected = model.run_features(x)
    cfg = {k: v for k, v in config.items() if k not in ("format", "architecture")}
    cfg["signature"] = config.get("signature") or {}
    if derived:
        cfg["derived"] = derived
    save_onnx(out, model.module, torch.from_numpy(x[:2]), cfg, tolerance=None)  # checked below
    got = load_model(out).run_features(x)
    diff = max_abs_diff(expected, got)
    if not diff <= tolerance:  # NaN too
        raise ValidationError(
            f"the ONNX export's outputs differ from the parent's by up to {diff:.3g} (largest absolute "
            f"difference on {len(x)} example inputs built from the signature), more than the tolerance "
            f"{tolerance:g}; no version was made",
            details={"max_abs_diff": diff if math.isfinite(diff) else None, "tolerance": tolerance},
        )
    return {"max_abs_diff": diff, "examples": len(x), "tolerance": tolerance}
