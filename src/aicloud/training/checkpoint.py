"""Checkpoints without pickle: tensors in safetensors, everything else as JSON in its header.

A checkpoint is one ``.safetensors`` file. Its tensors are every tensor (and numpy array) found
in the saved state; its header metadata holds, under ``aicloud.checkpoint``, a JSON document:
``{"format", "epoch", "step", "extra", "tree"}`` where ``tree`` is the state with each tensor
replaced by a reference to its entry. Loading rebuilds the same nested structure (dicts, lists,
tuples, numbers, strings, bytes, tensors, arrays) and never runs code from the file, as the
project rule for models asks (no pickle, no ``torch.save``)::

    from aicloud.training import save_checkpoint, load_checkpoint

    ckpt = load_checkpoint()                       # None on the first attempt
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt.state["model"])
        optimizer.load_state_dict(ckpt.state["optimizer"])
        start = ckpt.epoch + 1                     # the RNG states are restored too
    for epoch in range(start, epochs):
        ...
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, epoch=epoch)

:func:`pack` / :func:`unpack` are the format; :func:`rng_state` / :func:`set_rng_state` capture and
restore the Python, numpy and torch (CPU and CUDA) generators. The runtime helpers that upload and
download checkpoints are :func:`aicloud.training.session.save_checkpoint` and ``load_checkpoint``.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from aicloud.errors import InvalidDataError, ValidationError

__all__ = ["FORMAT", "Checkpoint", "pack", "rng_state", "set_rng_state", "unpack"]

FORMAT = "aicloud.checkpoint/v1"
META_KEY = "aicloud.checkpoint"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the saved ``state``, its ``epoch``/``step`` and ``extra`` (JSON)."""

    state: Any
    epoch: int | None = None
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] | None = None
    created_at: float | None = None


# -----------------------------------------------------------------------------------------------------
# the tree encoding: JSON with references to tensors


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def _add(self, tensor: torch.Tensor) -> str:
        key = f"t{len(self.tensors)}"
        # a private contiguous CPU copy: safetensors refuses views that share storage
        self.tensors[key] = tensor.detach().to("cpu", copy=True).contiguous()
        return key

    def encode(self, value: Any, where: str = "state") -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if np.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, torch.Tensor):
            return {"$tensor": self._add(value)}
        if isinstance(value, np.ndarray):
            raw = torch.from_numpy(np.ascontiguousarray(value).view(np.uint8).reshape(-1).copy())
            return {"$ndarray": self._add(raw), "dtype": value.dtype.str, "shape": list(value.shape)}
        if isinstance(value, np.generic):
            return self.encode(value.item(), where)
        if isinstance(value, bytes | bytearray):
            return {"$bytes": base64.b64encode(bytes(value)).decode()}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v, f"{where}.{k}") for k, v in value.items()}
            return {
                "$dict": [
                    [self.encode(k, where), self.encode(v, f"{where}[{k!r}]")] for k, v in value.items()
                ]
            }
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).removeprefix("torch.")}
        raise ValidationError.field(
            where,
            f"cannot checkpoint a {type(value).__name__}: use tensors, numpy arrays, numbers, strings, "
            "bytes, lists, tuples and dicts (state_dict() of modules and optimizers are fine)",
        )


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tensor" in value:
        return tensors[value["$tensor"]]
    if "$ndarray" in value:
        raw = tensors[value["$ndarray"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    if "$tuple" in value:
        return tuple(_decode(v, tensors) for v in value["$tuple"])
    if "$dict" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["$dict"]}
    if "$float" in value:
        return float(value["$float"])
    if "$dtype" in value:
        dtype = getattr(torch, str(value["$dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise InvalidDataError(f"the checkpoint names an unknown dtype {value['$dtype']!r}")
        return dtype
    return {k: _decode(v, tensors) for k, v in value.items()}


def pack(
    state: Any,
    *,
    epoch: int | None = None,
    step: int | None = None,
    extra: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialise ``state`` (plus RNG states and JSON ``extra``) into one safetensors file's bytes."""
    encoder = _Encoder()
    tree = encoder.encode(state)
    rng_tree = encoder.encode(dict(rng), "rng") if rng is not None else None
    doc = {
        "format": FORMAT,
        "epoch": epoch,
        "step": step,
        "extra": json.loads(json.dumps(dict(extra or {}), default=str)),
        "created_at": time.time(),
        "tree": tree,
        "rng": rng_tree,
    }
    return st_save(encoder.tensors, metadata={META_KEY: json.dumps(doc)})


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise InvalidDataError("not a checkpoint: too short for a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8 or size > 100 * 1024 * 1024:
        raise InvalidDataError("not a checkpoint: the safetensors header size is wrong")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        raise InvalidDataError("not a checkpoint: the safetensors header is not JSON") from None
    return header if isinstance(header, dict) else {}


def unpack(data: bytes) -> Checkpoint:
    """Read a checkpoint written by :func:`pack` (tensors come back on the CPU)."""
    meta = _header(data).get("__metadata__") or {}
    try:
        doc = json.loads(meta[META_KEY])
    except (KeyError, TypeError, ValueError):
        raise InvalidDataError("not an aicloud checkpoint: its header has no aicloud.checkpoint") from None
    if doc.get("format") != FORMAT:
        raise InvalidDataError(f"unsupported checkpoint format {doc.get('format')!r}; expected {FORMAT}")
    tensors = st_load(data)
    rng = doc.get("rng")
    return Checkpoint(
        state=_decode(doc.get("tree"), tensors),
        epoch=doc.get("epoch"),
        step=doc.get("step"),
        extra=dict(doc.get("extra") or {}),
        rng=_decode(rng, tensors) if rng is not None else None,
        created_at=doc.get("created_at"),
    )


# -----------------------------------------------------------------------------------------------------
# random number generators


def rng_state() -> dict[str, Any]:
    """The state of Python's, numpy's and torch's global generators (and CUDA's, when in use)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (generators it does not name are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
