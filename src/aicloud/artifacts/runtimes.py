"""Which runtimes can run a model artifact, from its ``config.json`` and file names alone (standard
library only: the control plane checks a deployment's ``runtime`` with it, a replica loads with it;
the choice among them is :mod:`aicloud.serving.runtimes`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aicloud.artifacts.format import ONNX, WEIGHTS
from aicloud.errors import ValidationError

RUNTIMES = ("auto", "torch", "onnxruntime", "numpy")
#: The concrete runtimes, in the order ``auto`` loads and lists them.
CONCRETE = ("numpy", "onnxruntime", "torch")


def kind_of(config: Mapping[str, Any], files: Iterable[str]) -> str:
    """``mlp``, ``cnn`` (built-ins with safetensors weights), ``onnx``, ``tiny-lm`` (the zoo's
    causal LM, a generation model: aicloud.serving.tiny_lm), or ``other``."""
    names = set(files)
    architecture = config.get("architecture")
    kind = architecture.get("type") if isinstance(architecture, dict) else None
    if kind == "onnx" or (kind is None and ONNX in names):
        return "onnx"
    if kind in ("mlp", "cnn", "tiny-lm") and WEIGHTS in names:
        return str(kind)
    return "other"


def runnable(config: Mapping[str, Any], files: Iterable[str]) -> dict[str, str | None]:
    """Each concrete runtime → None when it can run the version (its ``config.json`` and file
    names), else why not."""
    kind = kind_of(config, files)
    numpy_no = "numpy runs only the built-in MLP (safetensors weights)"
    if kind == "onnx":
        torch_no = (
            "the version is ONNX (model.onnx): torch cannot run it; use onnxruntime, or deploy the "
            "version it was exported from"
        )
        return {"numpy": numpy_no, "onnxruntime": None, "torch": torch_no}
    if kind in ("mlp", "cnn"):
        return {"numpy": None if kind == "mlp" else numpy_no, "onnxruntime": None, "torch": None}
    if kind == "tiny-lm":
        lm_no = "a generation model (its KV cache) runs in torch only"
        return {"numpy": lm_no, "onnxruntime": lm_no, "torch": None}
    other = "the version is neither a built-in model (safetensors) nor ONNX"
    return dict.fromkeys(CONCRETE, other)


def reference_of(config: Mapping[str, Any], files: Iterable[str]) -> str:
    """The runtime whose outputs are the version's own: ONNX Runtime for ONNX, else torch."""
    return "onnxruntime" if kind_of(config, files) == "onnx" else "torch"


def default_runtime(config: Mapping[str, Any], files: Iterable[str]) -> str:
    """What an unset ``runtime`` serves: numpy for the built-in MLP, else the reference."""
    return "numpy" if kind_of(config, files) == "mlp" else reference_of(config, files)


def needs_torch(runtime: str | None, config: Mapping[str, Any], files: Iterable[str]) -> bool:
    """Whether a replica serving the version with ``runtime`` imports torch: torch runs it, or the
    replica makes an ONNX model of a built-in one (``onnxruntime`` or ``auto`` on safetensors weights).
    The warm template a replica is forked from follows it (docs/serving.md, "Warm templates")."""
    files = list(files)
    kind = kind_of(config, files)
    if kind == "tiny-lm":
        return True
    if kind not in ("mlp", "cnn"):
        return False
    if runtime is None:
        return default_runtime(config, files) == "torch"
    return runtime in ("torch", "onnxruntime", "auto")


def check_runtime(runtime: str | None, config: Mapping[str, Any], files: Iterable[str]) -> None:
    """Raises ValidationError naming ``runtime`` when an explicit runtime cannot run the version."""
    if runtime is None or runtime == "auto":
        return
    if runtime not in RUNTIMES:
        raise ValidationError.field("runtime", f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    why = runnable(config, files)[runtime]
    if why is not None:
        raise ValidationError.field("runtime", f"runtime {runtime!r} cannot serve this version: {why}")
