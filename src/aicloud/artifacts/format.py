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
) -> Path:
    """Export ``module`` to ``model.onnx`` (output ``output``, dynamic batch axis) and its tensor signature.

    ``example_input`` is one batch of the model's input: one tensor, e.g. ``torch.zeros(1, 64)`` (the
    input is named ``input``), or, for a ``forward`` of several tensors, a dict of them by
    ``forward``'s parameter names (``{"ids": ..., "mask": ...}``). The signature records each input's
    name, dtype and shape (``[-1, ...]``): the endpoint and ``client.models.load`` take rows of that
    shape (:mod:`aicloud.artifacts.inputs`). The module is exported in eval mode (dropout off) and its
    mode is restored afterwards.
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
                dynamic_axes={name: {0: "batch"} for name in [*examples, "output"]},
                dynamo=False,
            )
    finally:
        module.train(was_training)
    tensors = [
        {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": [-1, *t.shape[1:]]}
        for name, t in examples.items()
    ]
    cfg: dict[str, Any] = {"format": MODEL_FORMAT, "architecture": {"type": "onnx"}}
    if len(tensors) == 1:
        cfg["input_shape"] = tensors[0]["shape"][1:]
        cfg["input_dtype"] = tensors[0]["dtype"]
    cfg.update(dict(config or {}))
    cfg.setdefault("signature", {"inputs": tensors})
    (folder / WEIGHTS).unlink(missing_ok=True)
    _write_config(folder, cfg)
    return folder
