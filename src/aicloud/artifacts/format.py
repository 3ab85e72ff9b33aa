"""The model artifact format, its reader and its writers: ``config.json`` plus ``model.safetensors`` or
``model.onnx``. Never pickle.

* Built-in architectures (:mod:`aicloud.artifacts.architectures`) are saved as a safetensors state
  dict (:func:`save_builtin`) and rebuilt from ``config["architecture"]`` when loaded
  (:func:`aicloud.artifacts.loader.load_model`).
* Any other ``torch.nn.Module`` is exported to ONNX (:func:`save_onnx`, dynamic batch axis) and run
  with ONNX Runtime.

:func:`read_config` reads JSON only and imports neither torch nor pandas (a replica serving the
built-in MLP in numpy reads it); torch is imported by the writers when they run.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicloud.errors import InvalidDataError, ValidationError

if TYPE_CHECKING:
    from torch import nn

MODEL_FORMAT = "aicloud.model/v1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
CLASSIFICATION_TASKS = ("tabular-classification", "image-classification", "classification")
#: The largest absolute difference of any output, module against its ONNX export, that an export
#: may have (docs/compression.md).
TOLERANCE = 1e-4
#: Examples of at most this many numbers (all inputs together) are kept in ``signature.examples``.
MAX_EXAMPLE_VALUES = 16_384


def read_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of an aicloud model folder.

    Raises:
        InvalidDataError: no ``config.json``, not JSON, or not of :data:`MODEL_FORMAT`.
    """
    path = Path(folder) / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidDataError(f"{folder}: no config.json; is this an aicloud model folder?") from None
    except ValueError as exc:
        raise InvalidDataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise InvalidDataError(f"{path}: not an aicloud model config (expected format {MODEL_FORMAT!r})")
    return config


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    tmp = folder / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=1, sort_keys=False, allow_nan=False) + "\n")
    os.replace(tmp, folder / CONFIG)


def save_builtin(folder: str | Path, module: nn.Module, config: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (the state dict) and ``config.json`` for a built-in architecture."""
    from safetensors.torch import save_file

    architecture = getattr(module, "architecture", None)
    if not isinstance(architecture, dict):
        raise ValidationError.field("module", "not a built-in aicloud architecture (use save_onnx)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"format": MODEL_FORMAT, **dict(config or {}), "architecture": architecture}
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": MODEL_FORMAT})
    (folder / ONNX).unlink(missing_ok=True)
    _write_config(folder, cfg)
    return folder


def save_onnx(
    folder: str | Path,
    module: nn.Module,
    example_input: Any,
    config: Mapping[str, Any] | None = None,
    *,
    dynamic_axes: Mapping[str, Any] | None = None,
    tolerance: float | None = TOLERANCE,
) -> Path:
    """Export ``module`` to ``model.onnx`` (output ``output``, dynamic batch axis) and its tensor signature.

    ``example_input`` is one batch of the model's input: one tensor, e.g. ``torch.zeros(1, 64)`` (the
    input is named ``input``), or, for a ``forward`` of several tensors, a dict of them by
    ``forward``'s parameter names (``{"input_ids": ..., "attention_mask": ...}``). The signature
    records each input's name, dtype and shape (``[-1, ...]``): the endpoint and
    ``client.models.load`` take rows of that shape (:mod:`aicloud.artifacts.inputs`).

    ``dynamic_axes``: besides the batch axis (0, always free), the axes of an input (or of
    ``output``) that may take any length, e.g. ``{"input_ids": [1], "attention_mask": [1]}`` for
    token sequences (torch's ``{name: {axis: label}}`` form is accepted too); they are ``-1`` in the
    signature. ONNX Runtime's outputs must match the module's on the examples within ``tolerance``
    (largest absolute difference; None: not checked), else a ValidationError names the difference
    and nothing is kept. A model with integer inputs (token ids, masks: values that cannot be drawn at
    random) keeps its examples in the signature (``signature.examples``, when they hold at most
    :data:`MAX_EXAMPLE_VALUES` numbers): every later check of the model (compression, ``runtime:
    auto``) runs on them. The module is
    exported in eval mode (dropout off) and its mode is restored afterwards.
    """
    import inspect

    import torch

    if isinstance(example_input, torch.Tensor):
        examples = {"input": example_input}
        args: tuple[Any, ...] = (example_input,)
    elif (
        isinstance(example_input, Mapping)
        and example_input
        and all(isinstance(v, torch.Tensor) for v in example_input.values())
    ):
        params = list(inspect.signature(module.forward).parameters)
        unknown = [str(k) for k in example_input if k not in params]
        if unknown:
            raise ValidationError.field(
                "example_input", f"{unknown} are not parameters of {type(module).__name__}.forward {params}"
            )
        examples = {p: example_input[p] for p in params if p in example_input}  # forward's order
        args = tuple(examples.values())
    else:
        raise ValidationError.field(
            "example_input",
            "pass one tensor (a batch of the model's input), or a dict of tensors by the names of "
            "forward's parameters",
        )
    free = _free_axes(dynamic_axes, [*examples, "output"], {n: t.dim() for n, t in examples.items()})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            # torch 2.13 marks the TorchScript exporter deprecated in favour of the torch.export one,
            # which needs onnxscript and itself raises FutureWarnings; the TorchScript one works offline.
            warnings.filterwarnings(
                "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
            )
            warnings.filterwarnings(
                "ignore", message="The feature will be removed", category=DeprecationWarning
            )
            torch.onnx.export(
                module,
                args,
                str(folder / ONNX),
                input_names=list(examples),
                output_names=["output"],
                dynamic_axes={
                    name: {0: "batch", **{a: f"{name}_{a}" for a in free.get(name, ())}}
                    for name in [*examples, "output"]
                },
                dynamo=False,
            )
            if tolerance is not None:
                with torch.inference_mode():
                    expected = module(*args)
    finally:
        module.train(was_training)
    if tolerance is not None:
        _check_export(folder / ONNX, examples, expected, tolerance)
    tensors = [
        {
            "name": name,
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": [-1, *(-1 if a in free.get(name, ()) else d for a, d in enumerate(t.shape) if a > 0)],
        }
        for name, t in examples.items()
    ]
    cfg: dict[str, Any] = {"format": MODEL_FORMAT, "architecture": {"type": "onnx"}}
    if len(tensors) == 1:
        cfg["input_shape"] = tensors[0]["shape"][1:]
        cfg["input_dtype"] = tensors[0]["dtype"]
    cfg.update(dict(config or {}))
    signature = dict(cfg.get("signature") or {"inputs": tensors})
    integers = any(not (t.is_floating_point() or t.is_complex()) for t in examples.values())
    small = sum(t.numel() for t in examples.values()) <= MAX_EXAMPLE_VALUES
    if integers and small and "examples" not in signature:  # token ids cannot be drawn at random
        import numpy as np

        values = {name: t.detach().cpu().numpy() for name, t in examples.items()}
        if all(v.dtype.kind in "biu" or bool(np.isfinite(v).all()) for v in values.values()):
            signature["examples"] = {name: v.tolist() for name, v in values.items()}
    cfg["signature"] = signature
    (folder / WEIGHTS).unlink(missing_ok=True)
    _write_config(folder, cfg)
    return folder


def _free_axes(
    dynamic_axes: Mapping[str, Any] | None, names: list[str], ranks: Mapping[str, int]
) -> dict[str, set[int]]:
    """``dynamic_axes`` checked against the inputs (and ``output``): name → the free axes but 0."""
    free: dict[str, set[int]] = {}
    for name, axes in (dynamic_axes or {}).items():
        if name not in names:
            raise ValidationError.field(
                "dynamic_axes", f"{name!r} is none of the inputs {names[:-1]} or 'output'"
            )
        try:
            picked = {int(a) for a in axes}
        except (TypeError, ValueError):
            raise ValidationError.field(
                "dynamic_axes", f"{name!r}: expected a list of axes, e.g. [1], got {axes!r}"
            ) from None
        rank = ranks.get(name)
        bad = [a for a in picked if a < 0 or (rank is not None and a >= rank)]
        if bad:
            raise ValidationError.field(
                "dynamic_axes", f"{name!r}: no axis {bad[0]} (the batch axis 0 is free anyway)"
            )
        free[name] = picked - {0}
    return free


def _check_export(path: Path, examples: Mapping[str, Any], expected: Any, tolerance: float) -> None:
    """ONNX Runtime's first output on ``examples`` against the module's (``expected``), or a
    ValidationError naming the largest absolute difference (the file is removed)."""
    import math

    import numpy as np

    from aicloud.artifacts.onnxrt import max_abs_diff, onnx_runner

    first = expected[0] if isinstance(expected, (tuple, list)) else expected
    want = np.asarray(first.detach().cpu().numpy(), dtype=np.float64)
    feed = {name: t.detach().cpu().numpy() for name, t in examples.items()}
    diff = max_abs_diff(onnx_runner(path)(feed), want)
    if not diff <= tolerance:  # NaN too
        path.unlink(missing_ok=True)
        raise ValidationError(
            f"the ONNX export's outputs differ from the module's by up to {diff:.3g} (largest absolute "
            f"difference on the {len(want)} example input row(s)), more than the tolerance {tolerance:g}; "
            "nothing was saved",
            details={"max_abs_diff": diff if math.isfinite(diff) else None, "tolerance": tolerance},
        )
