"""Model runtimes: the one small interface the replica serves a model through.

    class ModelRuntime(Protocol):
        load() → None; warmup() → None
        prepare(inputs) → Prepared          # validate one request (400 naming the field), on the loop
        run_batch([Prepared, ...]) → [outputs, ...]   # in the batcher's worker thread

:class:`ArtifactRuntime` serves an aicloud model folder: the built-in MLP in numpy (no torch import),
other safetensors built-ins through :func:`aicloud.artifacts.loader.load_model` (torch), ONNX through
ONNX Runtime. A later engine (quantized ONNX, another backend) is one more class with these methods.

Inputs of ``POST /predict`` and of the Open Inference Protocol, validated against the signature:

* rows in signature order, ``[[v1, v2, ...], ...]`` (numeric signatures), or
* rows as objects, ``[{"col": v, ...}, ...]`` (any signature; a missing column is refused).

Numeric columns must be finite numbers; ``true``/``false`` only fill ``bool`` columns (a boolean for
any other column is refused like a string). String columns take strings or numbers. An empty batch, a
ragged row, NaN or infinity is refused with a 400 naming the field, e.g. ``inputs[3]: expected 64
values, got 10``. Request bodies are parsed by :func:`parse_json`, which refuses JSON nested deeper than
:data:`MAX_JSON_DEPTH` levels with a 400 instead of exhausting the stack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pydantic_core

from aicloud.artifacts.format import CLASSIFICATION_TASKS, read_config
from aicloud.errors import BadRequestError

NUMERIC_DTYPES = {
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
}


def bad_input(field: str, problem: str) -> BadRequestError:
    """A 400 naming the field: ``inputs[3]: expected 64 values, got 10``."""
    return BadRequestError(f"{field}: {problem}", details=[{"field": field, "message": problem}])


MAX_JSON_DEPTH = 200
"""How deep a request's JSON may nest (arrays and objects); the parser's own recursion limit. Predict
inputs need 3 levels, OIP tensors one more per dimension."""


def parse_json(raw: bytes, field: str = "body") -> Any:
    """Parse a request body (UTF-8 JSON); a 400 naming ``field`` when it is not valid JSON or nests
    deeper than :data:`MAX_JSON_DEPTH` levels (``json.loads`` would exhaust the stack: a 500)."""
    try:
        return pydantic_core.from_json(raw)
    except ValueError as exc:
        if str(exc).startswith("recursion limit exceeded"):
            raise bad_input(field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        raise bad_input(field, f"not valid JSON: {exc}") from None


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str

    @property
    def numeric(self) -> bool:
        return self.dtype in NUMERIC_DTYPES


@dataclass(frozen=True)
class TensorSpec:
    """An Open Inference Protocol tensor: name, datatype (``FP32``, ``INT64``, ``BYTES``...), shape."""

    name: str
    datatype: str
    shape: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Prepared:
    """One request's validated input: a float64 ``(rows, columns)`` matrix or a list of row dicts."""

    __slots__ = ("matrix", "records", "rows")

    def __init__(self, matrix: np.ndarray | None = None, records: list[dict[str, Any]] | None = None):
        self.matrix = matrix
        self.records = records
        self.rows = len(matrix) if matrix is not None else len(records or [])


class ModelRuntime(Protocol):
    columns: list[Column]

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[TensorSpec]: ...

    def load(self) -> None: ...

    def warmup(self) -> None: ...

    def prepare(self, inputs: Any, field: str = "inputs") -> Prepared: ...

    def run_batch(self, batch: list[Prepared]) -> list[Any]: ...


# -----------------------------------------------------------------------------------------------------
# validation


def _check_number(value: Any, field: str, dtype: str) -> float:
    if isinstance(value, bool):
        if dtype == "bool":
            return float(value)
        raise bad_input(field, f"expected a number, got {str(value).lower()} (a boolean)")
    if not isinstance(value, (int, float)):
        raise bad_input(field, f"expected a number, got {type(value).__name__} {str(value)[:40]!r}")
    number = float(value)
    if not math.isfinite(number):
        raise bad_input(field, f"expected a finite number, got {value!r}")
    return number


def validate_rows(columns: list[Column], inputs: Any, field: str = "inputs") -> Prepared:
    """Validate ``inputs`` (rows as lists or objects) against the signature's columns."""
    if not isinstance(inputs, list):
        raise bad_input(field, f"expected a list of rows, got {type(inputs).__name__}")
    if not inputs:
        raise bad_input(field, "empty batch: send at least one row")
    width = len(columns)
    numeric = all(c.numeric for c in columns)
    all_bool = all(c.dtype == "bool" for c in columns)
    first = inputs[0]
    if isinstance(first, list) and numeric:
        try:  # fast path: one C-level conversion; on failure find the bad value for the message
            matrix = np.array(inputs)
        except (ValueError, TypeError):
            matrix = None
        if (
            matrix is not None
            and matrix.dtype.kind in "biuf"
            and matrix.ndim == 2
            and matrix.shape[1] == width
        ):
            if bool in set(map(type, chain.from_iterable(inputs))) and not all_bool:
                _slow_rows(columns, inputs, field)  # refuses a true/false outside a bool column
            matrix = matrix.astype(np.float64, copy=False)
            if not np.isfinite(matrix).all():
                r, c = np.argwhere(~np.isfinite(matrix))[0]
                raise bad_input(f"{field}[{r}][{c}]", f"expected a finite number, got {matrix[r, c]!r}")
            return Prepared(matrix=matrix)
        _slow_rows(columns, inputs, field)
        raise bad_input(field, f"expected rows of {width} numbers")
    if isinstance(first, list):
        records = [dict(zip([c.name for c in columns], row, strict=False)) for row in inputs]
        _slow_rows(columns, inputs, field)
        return _records(columns, records, field, numeric)
    if isinstance(first, Mapping):
        return _records(columns, inputs, field, numeric)
    raise bad_input(f"{field}[0]", f"expected a row (a list of {width} values or an object), got {first!r}")


def _slow_rows(columns: list[Column], rows: list[Any], field: str) -> None:
    width = len(columns)
    for r, row in enumerate(rows):
        if not isinstance(row, list):
            raise bad_input(f"{field}[{r}]", f"expected a list of {width} values, got {type(row).__name__}")
        if len(row) != width:
            raise bad_input(f"{field}[{r}]", f"expected {width} values, got {len(row)}")
        for c, (col, value) in enumerate(zip(columns, row, strict=True)):
            if col.numeric:
                _check_number(value, f"{field}[{r}][{c}] ({col.name})", col.dtype)
            elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise bad_input(f"{field}[{r}][{c}] ({col.name})", f"expected a string, got {value!r}")


def _records(columns: list[Column], rows: list[Any], field: str, numeric: bool) -> Prepared:
    names = [c.name for c in columns]
    matrix = np.empty((len(rows), len(columns)), dtype=np.float64) if numeric else None
    out: list[dict[str, Any]] = []
    for r, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise bad_input(
                f"{field}[{r}]", f"expected an object of {len(columns)} columns, got {row!r}"[:200]
            )
        missing = [n for n in names if n not in row]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise bad_input(f"{field}[{r}]", f"missing column(s) {shown}")
        for c, col in enumerate(columns):
            value = row[col.name]
            where = f"{field}[{r}].{col.name}"
            if col.numeric:
                number = _check_number(value, where, col.dtype)
                if matrix is not None:
                    matrix[r, c] = number
            elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise bad_input(where, f"expected a string, got {value!r}")
        if matrix is None:
            out.append({n: row[n] for n in names})
    return Prepared(matrix=matrix) if matrix is not None else Prepared(records=out)


# -----------------------------------------------------------------------------------------------------
# the aicloud model folder


_OIP_TYPES = {
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "bool": "BOOL",
}


class ArtifactRuntime:
    """Serves an aicloud model folder. Outputs per row: the label (classifiers), a float (regression),
    or the raw output row (generic ONNX models).

    A built-in MLP runs in numpy (:mod:`aicloud.serving.numpy_mlp`), so its replica never imports
    torch; other built-ins load through :func:`aicloud.artifacts.loader.load_model` (torch), ONNX
    models through ONNX Runtime. Rows the fast path cannot take (string columns, one-hot encoding) go
    through the model's :class:`~aicloud.artifacts.preprocess.Preprocessor` (pandas, imported then).

    OIP metadata: one input ``input`` ``FP32 [-1, columns]`` (numeric signatures: rows in signature
    order), or one ``[-1]`` tensor per column (``BYTES`` for string columns) otherwise; one output
    ``output``: ``INT64``/``BYTES`` ``[-1]`` for classifiers (by their label type), ``FP64 [-1]`` for
    regression, ``FP32 [-1, ...]`` for raw outputs.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.config: dict[str, Any] = {}
        self.columns: list[Column] = []
        self.engine = ""  # "numpy" (built-in MLP), "torch" or "onnx" once loaded

    # --- ModelRuntime
    def load(self) -> None:
        from aicloud.serving import numpy_mlp

        config = read_config(self.folder)
        if numpy_mlp.supports(config, self.folder):
            self._run = numpy_mlp.load(self.folder, config)
            self.engine = "numpy"
        else:
            from aicloud.artifacts.loader import load_model

            model = load_model(self.folder)
            config, self._run = model.config, model.run_features  # features → raw outputs, no pandas
            self.engine = "onnx" if model.module is None else "torch"
        self.config = config
        signature = config.get("signature")
        signature = signature if isinstance(signature, dict) else {}
        sig_inputs = [i for i in signature.get("inputs", []) if isinstance(i, dict)]
        dtypes = {str(i.get("name")): str(i.get("dtype") or "float64") for i in sig_inputs}
        pre: dict[str, Any] | None = config.get("preprocessing")
        pre = pre if isinstance(pre, dict) else None
        self._pre = pre
        self.input_shape = [int(s) for s in config.get("input_shape") or []]
        names = [str(f) for f in pre.get("features", [])] if pre else [str(i.get("name")) for i in sig_inputs]
        self._input_names = list(names)
        if not names and self.input_shape:  # a generic ONNX model: one flat tensor
            names = [f"x{i}" for i in range(int(np.prod(self.input_shape)))]
            dtypes = {}
        self.columns = [Column(n, dtypes.get(n, "float64")) for n in names]
        labels = config.get("labels")
        self.labels: list[Any] | None = list(labels) if labels is not None else None
        self._label_array = np.asarray(labels) if labels is not None else None
        scale = config.get("target_scale")
        self._scale = (float(scale[0]), float(scale[1])) if scale else None
        task = config.get("task")
        self.task = str(task) if task else None
        self.is_classifier = self.labels is not None or self.task in CLASSIFICATION_TASKS
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._fast = False
        standardize = (pre or {}).get("standardize") or {}
        if pre is None:
            self._fast = True
        elif pre.get("image_shape"):
            mean, std = pre.get("image_norm") or [0.0, 1.0]
            self._mean, self._std, self._fast = np.array(mean), np.array(std), True
        elif not pre.get("onehot") and list(standardize) == names:
            stats = np.array([standardize[n] for n in names], dtype=np.float64).reshape(-1, 2)
            self._mean, self._std, self._fast = stats[:, 0], stats[:, 1], True
        self._dtype = np.dtype(config.get("input_dtype") or "float32")

    def warmup(self) -> None:
        numeric = all(c.numeric for c in self.columns)
        if numeric:
            zeros = Prepared(matrix=np.zeros((1, len(self.columns))))
        else:
            zeros = Prepared(records=[{c.name: (0 if c.numeric else "") for c in self.columns}])
        for _ in range(3):
            self.run_batch([zeros, zeros])

    def prepare(self, inputs: Any, field: str = "inputs") -> Prepared:
        return validate_rows(self.columns, inputs, field)

    def run_batch(self, batch: list[Prepared]) -> list[Any]:
        counts = [p.rows for p in batch]
        if all(p.matrix is not None for p in batch):
            matrices = [p.matrix for p in batch if p.matrix is not None]
            x = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
            out = self._predict_matrix(x)
        else:
            records = [r for p in batch for r in self._as_records(p)]
            out = self._decode(self._run(self._features(records)))
        results: list[Any] = []
        start = 0
        for n in counts:
            results.append(out[start : start + n].tolist())
            start += n
        return results

    # --- details
    def _as_records(self, p: Prepared) -> list[dict[str, Any]]:
        if p.records is not None:
            return p.records
        assert p.matrix is not None
        names = [c.name for c in self.columns]
        return [dict(zip(names, row, strict=True)) for row in p.matrix.tolist()]

    def _features(self, rows: Any) -> np.ndarray:
        """The model's input tensor for raw rows (objects, or a matrix in signature order) the slow
        way: pandas and the fitted preprocessing, as :meth:`LoadedModel.features` does."""
        import pandas as pd

        names = self._input_names
        if isinstance(rows, np.ndarray):
            frame = pd.DataFrame(rows, columns=names)
        else:
            frame = pd.DataFrame(list(rows))
        if self._pre is not None:
            from aicloud.artifacts.preprocess import Preprocessor

            x = Preprocessor.from_config(self._pre).transform(frame)
        else:
            present = [n for n in names if n in frame.columns]
            x = frame[present].to_numpy() if present and len(present) == len(names) else frame.to_numpy()
        x = np.ascontiguousarray(np.asarray(x, dtype=self._dtype))
        if self.input_shape and list(x.shape[1:]) != self.input_shape:
            x = x.reshape(x.shape[0], *self.input_shape)
        return x

    def _predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if not self._fast:
            return self._decode(self._run(self._features(x)))
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        features = np.ascontiguousarray(x, dtype=self._dtype)
        if self.input_shape and list(features.shape[1:]) != self.input_shape:
            features = features.reshape(features.shape[0], *self.input_shape)
        return self._decode(self._run(features))

    def _decode(self, out: np.ndarray) -> np.ndarray:
        """Raw outputs → labels (classifiers), unscaled floats (regression) or the raw rows."""
        if self.is_classifier:
            index = np.argmax(out, axis=1)
            return self._label_array[index] if self._label_array is not None else index
        if self._scale is not None or self.task == "tabular-regression":
            values = np.asarray(out).reshape(out.shape[0], -1)[:, 0].astype(np.float64)
            return values * self._scale[1] + self._scale[0] if self._scale is not None else values
        return np.asarray(out)

    @property
    def inputs(self) -> list[TensorSpec]:
        if all(c.numeric for c in self.columns):
            return [TensorSpec("input", "FP32", [-1, len(self.columns)])]
        return [
            TensorSpec(c.name, _OIP_TYPES.get(c.dtype, "BYTES") if c.numeric else "BYTES", [-1])
            for c in self.columns
        ]

    @property
    def outputs(self) -> list[TensorSpec]:
        if self.is_classifier:
            labels = self.labels if self.labels is not None else [0]
            is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in labels)
            return [TensorSpec("output", "INT64" if is_int else "BYTES", [-1])]
        if self._scale is not None or self.task == "tabular-regression":
            return [TensorSpec("output", "FP64", [-1])]
        return [TensorSpec("output", "FP32", [-1])]

    @property
    def version(self) -> str:
        return str(self.config.get("version") or "1")


def columns_from_signature(signature: Mapping[str, Any]) -> list[Column]:
    inputs = signature.get("inputs") if isinstance(signature, Mapping) else None
    if not isinstance(inputs, Sequence):
        return []
    return [
        Column(str(i.get("name")), str(i.get("dtype") or "float64")) for i in inputs if isinstance(i, Mapping)
    ]
