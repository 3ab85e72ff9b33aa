"""Model runtimes: the one small interface the replica serves a model through.

    class ModelRuntime(Protocol):
        load() → None; warmup() → None
        prepare(inputs) → Prepared          # validate one request (400 naming the field), on the loop
        run_batch([Prepared, ...]) → [outputs, ...]   # in the batcher's worker thread

:class:`ArtifactRuntime` serves an aicloud model folder under the runtime the deployment asks for
(:mod:`aicloud.serving.runtimes`: torch, ONNX Runtime, numpy for the built-in MLP, or ``auto``: the
fastest that matches the version's own outputs); unset, the built-in MLP in numpy (no torch import),
other safetensors built-ins in torch, ONNX through ONNX Runtime.

Inputs of ``POST /predict`` and of the Open Inference Protocol, validated against the signature:

* a tabular model (the built-in tasks; a signature of columns): rows in signature order,
  ``[[v1, v2, ...], ...]``, or rows as objects, ``[{"col": v, ...}, ...]`` (a missing column is
  refused). With fitted preprocessing a ``null`` is a missing value, imputed as in training;
* a model with tensor inputs (your own ``nn.Module`` saved with ``save_model(..., example_input=...)``):
  rows of the input's shape, or objects of named tensors for several inputs
  (:mod:`aicloud.artifacts.inputs`, the conversion ``client.models.load`` uses too).

Numeric columns must be finite numbers; ``true``/``false`` only fill ``bool`` columns (a boolean for
any other column is refused like a string). String columns take strings or numbers. An empty batch, a
ragged row, NaN or infinity is refused with a 400 naming the field, e.g. ``inputs[3]: expected 64
values, got 10``. Request bodies are parsed by :func:`parse_json`, which refuses JSON nested deeper than
:data:`MAX_JSON_DEPTH` levels with a 400 instead of exhausting the stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pydantic_core

from aicloud.artifacts.format import CLASSIFICATION_TASKS, read_config
from aicloud.artifacts.inputs import bad_input, tensor_inputs, tensors_from_rows, zeros
from aicloud.artifacts.preprocess import Preprocessor, records_frame

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


__all__ = [
    "ArtifactRuntime",
    "Column",
    "ModelRuntime",
    "Prepared",
    "TensorSpec",
    "bad_input",
    "validate_rows",
]


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
    """A signature column; ``nullable`` when the model's fitted preprocessing imputes a missing value."""

    name: str
    dtype: str
    nullable: bool = False

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
    """One request's validated input: a float64 ``(rows, columns)`` matrix (NaN: a missing value), a
    list of row dicts, or the tensors of a model with tensor inputs (one array per input name)."""

    __slots__ = ("matrix", "records", "rows", "tensors")

    def __init__(
        self,
        matrix: np.ndarray | None = None,
        records: list[dict[str, Any]] | None = None,
        tensors: dict[str, np.ndarray] | None = None,
    ):
        self.matrix = matrix
        self.records = records
        self.tensors = tensors
        if tensors is not None:
            self.rows = len(next(iter(tensors.values())))
        else:
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


def _check_number(value: Any, field: str, dtype: str, nullable: bool = False) -> float:
    if value is None and nullable:
        return math.nan  # a missing value: the preprocessing imputes it
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
        _slow_rows(columns, inputs, field)  # raises, unless the rows hold nulls of nullable columns
        names = [c.name for c in columns]
        return _records(columns, [dict(zip(names, row, strict=True)) for row in inputs], field, numeric)
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
                _check_number(value, f"{field}[{r}][{c}] ({col.name})", col.dtype, col.nullable)
            elif value is None and col.nullable:
                continue
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
                number = _check_number(value, where, col.dtype, col.nullable)
                if matrix is not None:
                    matrix[r, c] = number
            elif value is None and col.nullable:
                continue
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
    or the raw output row (models without a task, e.g. your own ``nn.Module``).

    ``runtime`` picks the engine (:func:`aicloud.serving.runtimes.select`); unset, a built-in MLP
    runs in numpy (:mod:`aicloud.serving.numpy_mlp`), so its replica never imports torch, other
    built-ins in torch, ONNX models in ONNX Runtime (without torch). Inputs become the model's
    features with the code :func:`~aicloud.artifacts.loader.load_model` uses, so an endpoint and
    ``client.models.load`` agree on every row: the fitted
    :class:`~aicloud.artifacts.preprocess.Preprocessor` (its numpy
    :meth:`~aicloud.artifacts.preprocess.Preprocessor.transform_numbers` for rows of numbers, its
    pandas ``transform`` for string columns), or :func:`aicloud.artifacts.inputs.tensors_from_rows`
    for tensor inputs.

    OIP metadata: one input ``input`` ``FP32 [-1, columns]`` (numeric signatures: rows in signature
    order), or one ``[-1]`` tensor per column (``BYTES`` for string columns) otherwise; a model with
    tensor inputs: one tensor per input, ``[-1, *shape]``. One output ``output``: ``INT64``/``BYTES``
    ``[-1]`` for classifiers (by their label type), ``FP64 [-1]`` for regression, ``FP32 [-1, ...]`` for
    raw outputs.
    """

    def __init__(
        self, folder: str | Path, runtime: str | None = None, threads: int | None = None, batch: int = 32
    ) -> None:
        self.folder = Path(folder)
        self.runtime = runtime  # the deployment's: auto, torch, onnxruntime, numpy; None: unset
        self.threads = threads  # intra-op threads (the replica's cpus // batch_workers)
        self.batch = batch  # the largest batch (auto measures at batch 1 and this)
        self.config: dict[str, Any] = {}
        self.columns: list[Column] = []
        self.engine = ""  # "numpy", "torch" or "onnxruntime" once loaded
        self.choice = ""  # the runtime and why (auto: the measurements)
        self._run: Callable[[Any], np.ndarray]  # features (an array, or arrays by input name) → outputs

    # --- ModelRuntime
    def load(self) -> None:
        from aicloud.serving.runtimes import select

        config = read_config(self.folder)
        self._run, choice = select(self.runtime, self.folder, config, self.threads, self.batch)
        self.engine, self.choice = choice.runtime, choice.line
        self.config = config
        self.tensors = tensor_inputs(config)  # a model from your own code: named input tensors
        signature = config.get("signature")
        signature = signature if isinstance(signature, dict) else {}
        sig_inputs = [i for i in signature.get("inputs", []) if isinstance(i, dict)]
        dtypes = {str(i.get("name")): str(i.get("dtype") or "float64") for i in sig_inputs}
        pre = config.get("preprocessing")
        self._pre = Preprocessor.from_config(pre) if isinstance(pre, dict) else None
        self.input_shape = [int(s) for s in config.get("input_shape") or []]
        names = list(self._pre.features) if self._pre else [str(i.get("name")) for i in sig_inputs]
        if self.tensors:
            names, dtypes = [], {}
        self._input_names = list(names)
        if not names and self.input_shape and not self.tensors:  # an ONNX model without a signature
            names = [f"x{i}" for i in range(int(np.prod(self.input_shape)))]
            dtypes = {}
        nullable = self._pre is not None  # the fitted preprocessing imputes a missing value
        self.columns = [Column(n, dtypes.get(n, "float64"), nullable) for n in names]
        labels = config.get("labels")
        self.labels: list[Any] | None = list(labels) if labels is not None else None
        self._label_array = np.asarray(labels) if labels is not None else None
        scale = config.get("target_scale")
        self._scale = (float(scale[0]), float(scale[1])) if scale else None
        task = config.get("task")
        self.task = str(task) if task else None
        self.is_classifier = self.labels is not None or self.task in CLASSIFICATION_TASKS
        # rows of numbers skip pandas unless a column is one-hot encoded
        self._fast = self._pre is None or self._pre.transform_numbers(np.zeros((0, len(names)))) is not None
        self._dtype = np.dtype(config.get("input_dtype") or "float32")

    def warmup(self) -> None:
        if self.tensors:
            batch = [Prepared(tensors=zeros(self.tensors, 1)), Prepared(tensors=zeros(self.tensors, 1))]
        elif all(c.numeric for c in self.columns):
            batch = [Prepared(matrix=np.zeros((1, len(self.columns))))] * 2
        else:
            batch = [Prepared(records=[{c.name: (0 if c.numeric else "") for c in self.columns}])] * 2
        for _ in range(3):
            self.run_batch(batch)

    def prepare(self, inputs: Any, field: str = "inputs") -> Prepared:
        if self.tensors:
            return Prepared(tensors=tensors_from_rows(self.tensors, inputs, field))
        return validate_rows(self.columns, inputs, field)

    def run_batch(self, batch: list[Prepared]) -> list[Any]:
        counts = [p.rows for p in batch]
        if self.tensors:
            parts = [p.tensors for p in batch if p.tensors is not None]
            # requests of another length along a free axis (an encoder's sequence) run apart
            groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
            for i, t in enumerate(parts):
                groups.setdefault(tuple(t[s.name].shape[1:] for s in self.tensors), []).append(i)
            outs: dict[int, np.ndarray] = {}
            for members in groups.values():
                out = self._run_tensors([parts[i] for i in members])
                start = 0
                for i in members:
                    outs[i] = out[start : start + counts[i]]
                    start += counts[i]
            return [outs[i].tolist() for i in range(len(parts))]
        elif all(p.matrix is not None for p in batch):
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
    def _run_tensors(self, parts: list[dict[str, np.ndarray]]) -> np.ndarray:
        feed = {
            s.name: parts[0][s.name] if len(parts) == 1 else np.concatenate([t[s.name] for t in parts])
            for s in self.tensors
        }
        return np.asarray(self._decode(self._run(feed if len(feed) > 1 else next(iter(feed.values())))))

    def _as_records(self, p: Prepared) -> list[dict[str, Any]]:
        if p.records is not None:
            return p.records
        assert p.matrix is not None
        names = [c.name for c in self.columns]
        return [  # NaN in a matrix is a missing value (a null)
            {n: None if v != v else v for n, v in zip(names, row, strict=True)} for row in p.matrix.tolist()
        ]

    def _features(self, rows: Any) -> np.ndarray:
        """The model's input tensor for raw rows (objects, or a matrix in signature order) the slow
        way: pandas and the fitted preprocessing, as :meth:`LoadedModel.features` does."""
        import pandas as pd

        names = self._input_names
        frame = pd.DataFrame(rows, columns=names) if isinstance(rows, np.ndarray) else records_frame(rows)
        if self._pre is not None:
            x = self._pre.transform(frame)
        else:
            present = [n for n in names if n in frame.columns]
            x = frame[present].to_numpy() if present and len(present) == len(names) else frame.to_numpy()
        return self._shaped(x)

    def _shaped(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self._dtype)
        if self.input_shape and list(x.shape[1:]) != self.input_shape:
            x = x.reshape(x.shape[0], *self.input_shape)
        return x

    def _predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if not self._fast:
            return self._decode(self._run(self._features(x)))
        features = self._pre.transform_numbers(x) if self._pre is not None else x
        assert features is not None
        return self._decode(self._run(self._shaped(features)))

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
        if self.tensors:
            return [TensorSpec(t.name, _OIP_TYPES.get(t.dtype, "FP32"), [-1, *t.shape]) for t in self.tensors]
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
