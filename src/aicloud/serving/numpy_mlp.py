"""The built-in MLP in numpy: serve it without importing torch (a replica starts ~2 s sooner).

A built-in ``mlp`` artifact (:class:`aicloud.artifacts.architectures.MLP`) is ``Linear → ReLU → Dropout``
per hidden layer, then a last ``Linear``; its safetensors state dict names the linear layers
``net.<i>.weight`` / ``net.<i>.bias`` with ``i = 0, 3, 6, ...``. In eval mode dropout is the
identity, so the forward pass is matrix products, bias adds and ReLUs: numpy does it with the same
float32 arithmetic (``tests/unit/test_serving_numpy.py`` checks the outputs equal torch's).

Loading reads safetensors (``safetensors.numpy``) and JSON only; nothing in the artifact runs code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.artifacts.format import WEIGHTS
from aicloud.errors import InvalidDataError

Runner = Callable[[np.ndarray], np.ndarray]


def supports(config: dict[str, Any], folder: str | Path) -> bool:
    """Whether the artifact is a built-in MLP with safetensors weights (servable by :func:`load`)."""
    architecture = config.get("architecture")
    return (
        isinstance(architecture, dict)
        and architecture.get("type") == "mlp"
        and (Path(folder) / WEIGHTS).is_file()
    )


def load(folder: str | Path, config: dict[str, Any]) -> Runner:
    """The forward pass of the built-in MLP in ``folder``: float features ``(rows, in)`` → ``(rows, out)``.

    Raises:
        InvalidDataError: the architecture is incomplete or the weights do not fit it.
    """
    from safetensors.numpy import load_file

    path = Path(folder) / WEIGHTS
    arch = config["architecture"]
    try:
        hidden = [int(h) for h in arch.get("hidden", [])]
        widths = [int(arch["in_features"]), *hidden, int(arch["out_features"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidDataError(
            f"config.json: architecture 'mlp' is missing or has a bad field: {exc}"
        ) from None
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise InvalidDataError(f"{path}: cannot read the weights: {exc}") from None
    dtype = np.dtype(config.get("input_dtype") or "float32")
    expected = {f"net.{3 * i}.{part}" for i in range(len(widths) - 1) for part in ("weight", "bias")}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise InvalidDataError(
            f"{path}: weights do not fit architecture 'mlp' (missing {missing}, unexpected {extra})"
        )
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        weight, bias = state[f"net.{3 * i}.weight"], state[f"net.{3 * i}.bias"]
        if weight.shape != (fan_out, fan_in) or bias.shape != (fan_out,):
            raise InvalidDataError(
                f"{path}: weights do not fit architecture 'mlp': layer {i} has weight {list(weight.shape)} "
                f"and bias {list(bias.shape)}, the architecture needs [{fan_out}, {fan_in}] and [{fan_out}]"
            )
        # x @ W.T with W.T stored contiguous: one GEMM per layer, no transposed view per call
        layers.append((np.ascontiguousarray(weight.T, dtype=dtype), np.ascontiguousarray(bias, dtype=dtype)))
    last = len(layers) - 1

    def run(x: np.ndarray) -> np.ndarray:
        h = x.reshape(x.shape[0], -1)
        for i, (weight_t, bias) in enumerate(layers):
            h = h @ weight_t
            h += bias
            if i != last:
                np.maximum(h, 0, out=h)
        return h

    return run
