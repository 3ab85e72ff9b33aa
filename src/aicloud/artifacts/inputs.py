"""What a model takes: the tensor inputs of a model saved from your own code, read from its signature.

A model exported with :func:`aicloud.artifacts.format.save_onnx` (``aicloud.training.save_model`` of a
custom ``nn.Module``) has a signature whose inputs carry a ``shape`` (batch axis first, ``-1``)::

    {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 7]}]}

Another ``-1`` is an axis of any length (``dynamic_axes``: an encoder's ``input_ids`` and
``attention_mask`` are ``[-1, -1]``, int64); every row of one request has the same length there. The
signature may keep the examples the model was exported with (``"examples": {name: rows}``): they
are the inputs every check of the model runs on (:func:`signature_examples`).

Such a model takes **tensors**, not table columns:

* one input ``[-1, 7]``: rows of 7 numbers, ``[[0.1, ...], ...]`` (a ``[-1, 1, 8, 8]`` input: rows
  nested ``1 x 8 x 8``, or flat rows of its 64 numbers in C order); a row may also be an object
  ``{"input": [...]}``;
* several inputs: rows as objects of named tensors, ``[{"a": [...], "b": [...]}, ...]``, or (locally,
  and in OIP) one array per input, ``{"a": array (rows, ...), "b": ...}``.

Values must be finite numbers (``true``/``false`` only for a ``bool`` input). :func:`tensors_from_rows`
is the one conversion: :class:`aicloud.artifacts.loader.LoadedModel` (``client.models.load``) and the
serving runtime both call it, so a row is refused, or answered, the same way by both. numpy only: the
replica imports this module without pandas or torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aicloud.errors import BadRequestError

TENSOR_DTYPES = {
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "float16",
    "float32",
    "float64",
}


def bad_input(field: str, problem: str) -> BadRequestError:
    """A 400 naming the field: ``inputs[3]: expected 64 values, got 10``."""
    return BadRequestError(f"{field}: {problem}", details=[{"field": field, "message": problem}])


@dataclass(frozen=True)
class TensorInput:
    """One named input tensor: its dtype and its shape without the batch axis."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Numbers in one row (``-1`` when an axis is free)."""
        return math.prod(self.shape) if self.fixed else -1

    @property
    def fixed(self) -> bool:
        return all(d >= 0 for d in self.shape)

    def matches(self, shape: Sequence[int]) -> bool:
        """Whether one row of shape ``shape`` fits (a free axis takes any length)."""
        return len(shape) == len(self.shape) and all(
            d < 0 or d == s for d, s in zip(self.shape, shape, strict=True)
        )


def tensor_inputs(config: Mapping[str, Any]) -> list[TensorInput]:
    """The tensor inputs of a model without fitted preprocessing whose signature inputs all have a
    ``shape``; ``[]`` for a tabular model (columns, see :mod:`aicloud.artifacts.preprocess`)."""
    if isinstance(config.get("preprocessing"), Mapping):
        return []
    signature = config.get("signature")
    inputs = signature.get("inputs") if isinstance(signature, Mapping) else None
    if not isinstance(inputs, Sequence) or not inputs:
        return []
    specs: list[TensorInput] = []
    for item in inputs:
        shape = item.get("shape") if isinstance(item, Mapping) else None
        if not isinstance(shape, Sequence) or not shape:
            return []
        dtype = str(item.get("dtype") or "float32")
        specs.append(
            TensorInput(
                name=str(item.get("name")),
                dtype=dtype if dtype in TENSOR_DTYPES else "float32",
                shape=tuple(int(d) for d in shape[1:]),
            )
        )
    return specs


def tensors_from_rows(
    specs: Sequence[TensorInput], rows: Any, field: str = "inputs"
) -> dict[str, np.ndarray]:
    """Validate ``rows`` (a list of rows, or one array per input) → one array per input, batch first.

    Raises:
        BadRequestError: naming the field, e.g. ``inputs[2]: expected shape [7], got [6]``.
    """
    if isinstance(rows, Mapping):
        return tensors_from_columns(specs, rows, field)
    if isinstance(rows, np.ndarray) and len(specs) == 1:
        return {specs[0].name: _tensor(specs[0], rows, field)}
    if not isinstance(rows, (list, tuple)):
        raise bad_input(field, f"expected a list of rows, got {type(rows).__name__}")
    if not rows:
        raise bad_input(field, "empty batch: send at least one row")
    if len(specs) == 1 and not isinstance(rows[0], Mapping):
        return {specs[0].name: _tensor(specs[0], rows, field)}
    names = [s.name for s in specs]
    for r, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise bad_input(f"{field}[{r}]", f"expected an object of the inputs {names}, got {row!r}"[:200])
        missing = [n for n in names if n not in row]
        if missing:
            raise bad_input(f"{field}[{r}]", f"missing input(s) {', '.join(repr(n) for n in missing)}")
    return {s.name: _tensor(s, [row[s.name] for row in rows], field, f".{s.name}") for s in specs}


def tensors_from_columns(
    specs: Sequence[TensorInput], columns: Mapping[str, Any], field: str = "inputs"
) -> dict[str, np.ndarray]:
    """One array per input (``{"a": (rows, ...), ...}``) → validated arrays of one batch size."""
    out: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in specs:
        if spec.name not in columns:
            raise bad_input(field, f"missing input {spec.name!r}")
        tensor = _tensor(spec, columns[spec.name], f"{field}.{spec.name}")
        if rows is not None and len(tensor) != rows:
            raise bad_input(f"{field}.{spec.name}", f"expected {rows} rows like the other inputs")
        rows = len(tensor)
        out[spec.name] = tensor
    return out


def zeros(specs: Sequence[TensorInput], rows: int) -> dict[str, np.ndarray]:
    """A batch of zeros for every input (the replica's warm-up; a free axis of length 1)."""
    return {s.name: np.zeros((rows, *(max(d, 1) for d in s.shape)), dtype=s.dtype) for s in specs}


def signature_examples(config: Mapping[str, Any], rows: int | None = None) -> dict[str, np.ndarray] | None:
    """The examples kept in the signature (``signature.examples``, what the model was exported with),
    one array per input, repeated to ``rows`` rows when given; None when there are none (or they do
    not fit the inputs)."""
    signature = config.get("signature")
    examples = signature.get("examples") if isinstance(signature, Mapping) else None
    specs = tensor_inputs(config)
    if not isinstance(examples, Mapping) or not specs:
        return None
    try:
        arrays = tensors_from_columns(specs, examples, "signature.examples")
    except BadRequestError:
        return None
    if rows is None:
        return arrays
    return {k: np.ascontiguousarray(v[np.arange(rows) % len(v)]) for k, v in arrays.items()}


def _tensor(spec: TensorInput, values: Any, field: str, suffix: str = "") -> np.ndarray:
    """``values`` (one entry per row) as an array ``(rows, *spec.shape)`` of ``spec.dtype``."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged nesting
        array = None
    if (
        array is not None
        and spec.fixed
        and array.ndim == 2
        and len(spec.shape) > 1
        and array.shape[1] == spec.size
    ):
        array = array.reshape(len(array), *spec.shape)  # flat rows, in C order
    if array is None or array.dtype.kind not in "biuf" or not spec.matches(array.shape[1:]):
        _find_bad_row(spec, values, field, suffix)
        raise bad_input(field + suffix, f"expected rows shaped {list(spec.shape)} of numbers")
    if len(array) == 0:
        raise bad_input(field + suffix, "empty batch: send at least one row")
    if array.dtype.kind == "b" and spec.dtype != "bool":
        _find_bad_row(spec, values, field, suffix)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise bad_input(f"{field}[{where[0]}]{suffix}", f"expected finite numbers, got {array[where]!r}")
    return np.ascontiguousarray(array, dtype=spec.dtype)


def _find_bad_row(spec: TensorInput, values: Any, field: str, suffix: str) -> None:
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise bad_input(field + suffix, f"expected a list of rows, got {type(values).__name__}")
    for r, row in enumerate(values):
        where = f"{field}[{r}]{suffix}"
        try:
            array = np.asarray(row)
        except (ValueError, TypeError):
            raise bad_input(where, f"expected shape {list(spec.shape)}: the nesting is ragged") from None
        if not spec.matches(array.shape) and array.shape != (spec.size,):
            raise bad_input(where, f"expected shape {list(spec.shape)}, got {list(array.shape)}")
        if array.dtype.kind == "b" and spec.dtype != "bool":
            raise bad_input(where, "expected numbers, got true/false (booleans fill bool inputs only)")
        if array.dtype.kind not in "biuf":
            bad = next((v for v in array.reshape(-1).tolist() if not isinstance(v, (int, float))), None)
            raise bad_input(where, f"expected numbers, got {type(bad).__name__} {str(bad)[:40]!r}")
    if not spec.fixed:
        raise bad_input(
            field + suffix,
            f"rows of one request must have one shape (the inputs are {list(spec.shape)}, -1 any "
            "length): pad them to the same length",
        )
