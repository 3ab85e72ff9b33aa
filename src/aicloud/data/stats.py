"""Per-column statistics accumulated over record batches, in bounded memory.

For every column: ``nulls`` (nulls and float NaN), ``distinct`` (distinct non-null values) and
``distinct_approx``, plus ``min``/``max``/``mean``:

* numbers: min and max as ints or floats, mean as a float, and a ``histogram`` (``edges``: 21
  floats from min to max, ``counts``: 20 ints; ``sampled``: true when it was computed from an
  evenly strided sample of at most 20,000 values, fewer for wide tables, and scaled to the
  column's count);
* booleans count as numeric: min/max are ``false``/``true``, mean is the fraction of ``true``;
* strings: min/max/mean are None: text extremes are data values, and the metadata database is
  not encrypted, so recording them would leave plaintext of the upload on disk;
* dates, times and timestamps: min/max as ISO-like strings, mean is None;
* anything else (binary, nested lists/structs): min/max/mean None; distinct None for nested types.

Every value is JSON-safe: NaN and ±inf become None. Distinct counts are exact up to a cap per column
(at most 100,000 values, less when the table is wide, so all columns stay within a few million);
beyond it the column stops being tracked, ``distinct`` is a lower bound and ``distinct_approx`` true.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DISTINCT_CAP = 100_000
HISTOGRAM_BINS = 20
SAMPLE_CAP = 10_000  # values kept per numeric column for its histogram
SAMPLE_BUDGET = 1_000_000  # over all columns together
DISTINCT_BUDGET = 4_000_000  # distinct values tracked over all columns together
MIN_DISTINCT_CAP = 10_000
DTYPE_META = b"aicloud.dtype"

_FLOAT_NAMES = {"double": "float64", "float": "float32", "halffloat": "float16"}


def dtype_name(field: pa.Field) -> str:
    """The dtype reported in a profile's schema: numpy-like names for numbers, Arrow's otherwise."""
    meta = field.metadata or {}
    if DTYPE_META in meta:
        return meta[DTYPE_META].decode()
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    name = str(t)
    return _FLOAT_NAMES.get(name, name)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_temporal(t) and not pa.types.is_duration(t) and not pa.types.is_interval(t):
        return "temporal"
    if pa.types.is_nested(t):
        return "nested"
    return "other"


def distinct_cap(num_columns: int) -> int:
    """The per-column cap on tracked distinct values for a table this wide."""
    return max(MIN_DISTINCT_CAP, min(DISTINCT_CAP, DISTINCT_BUDGET // max(1, num_columns)))


def sample_cap(num_columns: int) -> int:
    """The per-column cap on values kept for a histogram, for a table this wide."""
    return max(200, min(SAMPLE_CAP, SAMPLE_BUDGET // max(1, num_columns)))


class _Sample:
    """An evenly strided sample of a column in bounded memory: every ``stride``-th value, the stride
    doubling (and the kept values halving) whenever more than ``2 * cap`` are held. Deterministic,
    and spread over the whole file rather than its first rows."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.stride = 1
        self.seen = 0
        self.parts: list[np.ndarray] = []
        self.held = 0

    def add(self, values: np.ndarray) -> None:
        first = (-self.seen) % self.stride  # the next index on the stride, within this piece
        picked = values[first :: self.stride]
        self.seen += len(values)
        self.parts.append(picked)
        self.held += len(picked)
        while self.held > 2 * self.cap:
            kept = np.concatenate(self.parts)[::2]
            self.parts, self.held, self.stride = [kept], len(kept), self.stride * 2

    def values(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.empty(0)


def histogram(sample: np.ndarray, low: float, high: float, total: int) -> dict[str, Any]:
    """``HISTOGRAM_BINS`` equal bins over ``[low, high]``: ``edges`` and ``counts``, the counts
    scaled from the sample to the ``total`` values of the column (exact when nothing was left out)."""
    bins = HISTOGRAM_BINS if high > low else 1
    counts, edges = np.histogram(sample, bins=bins, range=(low, high) if high > low else (low, low + 1))
    scale = total / len(sample) if len(sample) else 0.0
    return {
        "edges": [float(e) for e in edges] if high > low else [float(low), float(high)],
        "counts": [round(float(c) * scale) for c in counts],
        "sampled": len(sample) < total,
    }


def _json_number(v: Any) -> Any:
    if isinstance(v, Decimal):
        v = float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class ColumnStats:
    """Statistics of one column, fed one array (a batch's column, or a chunk of an array) at a time."""

    def __init__(self, type_: pa.DataType, cap: int = DISTINCT_CAP, samples: int = SAMPLE_CAP) -> None:
        self.type = type_.value_type if pa.types.is_dictionary(type_) else type_
        self.kind = _kind(self.type)
        self.nulls = 0
        self._cap = cap
        self._mins: list[pa.Scalar] = []
        self._maxs: list[pa.Scalar] = []
        self._sum = 0.0
        self._count = 0
        self._pending: list[pa.Array] = []
        self._pending_len = 0
        self._tracking = self.kind != "nested"
        self._unsupported = self.kind == "nested"  # no distinct count for this type
        self._lower_bound: int | None = None  # set when the cap was passed
        # numbers (not booleans) keep a sample for their histogram
        self._sample = (
            _Sample(samples) if self.kind == "numeric" and not pa.types.is_boolean(self.type) else None
        )

    def add(self, arr: pa.Array | pa.ChunkedArray) -> None:
        """Account for one more piece of the column."""
        if pa.types.is_dictionary(arr.type):
            if isinstance(arr, pa.ChunkedArray):
                for chunk in arr.chunks:
                    self.add(chunk)
                return
            arr = arr.dictionary_decode()
        if pa.types.is_float16(arr.type):
            arr = arr.cast(pa.float32())
        self.nulls += arr.null_count
        if self.kind == "null" or len(arr) == arr.null_count:
            return
        if pa.types.is_floating(arr.type):
            nan = pc.is_nan(arr)
            n_nan = pc.sum(nan).as_py() or 0
            if n_nan:
                self.nulls += n_nan
                arr = pc.filter(arr, pc.invert(nan))  # drops nulls as well
        if arr.null_count:
            arr = arr.drop_null()
        if len(arr) == 0:
            return
        if self.kind in ("numeric", "bool", "temporal"):
            mm = pc.min_max(arr)
            self._mins.append(mm["min"])
            self._maxs.append(mm["max"])
        if self.kind == "numeric":
            as_float = arr if pa.types.is_float64(arr.type) else arr.cast(pa.float64())
            summed = pc.sum(as_float)
            self._sum += summed.as_py() or 0.0
            self._count += len(arr)
            if self._sample is not None:
                self._sample.add(as_float.to_numpy(zero_copy_only=False))
        elif self.kind == "bool":
            self._sum += pc.sum(arr.cast(pa.int64())).as_py() or 0
            self._count += len(arr)
        if self._tracking:
            self._track(arr)

    def _track(self, arr: pa.Array) -> None:
        try:
            uniq = pc.unique(arr)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            self._tracking = False
            self._unsupported = True
            self._pending = []
            return
        if pa.types.is_floating(uniq.type):
            zeros = pc.sum(pc.equal(uniq, 0.0)).as_py() or 0
            if zeros:  # -0.0 and 0.0 are one value: keep only +0.0
                uniq = pc.add(uniq, 0.0)
                if zeros > 1:
                    uniq = pc.unique(uniq)
        if len(uniq) > self._cap:
            self._stop(len(uniq))
            return
        self._pending.append(uniq)
        self._pending_len += len(uniq)
        if self._pending_len > 2 * self._cap:
            self._merge()

    def _stop(self, lower_bound: int) -> None:
        self._tracking = False
        self._lower_bound = lower_bound
        self._pending = []
        self._pending_len = 0

    def _merge(self) -> None:
        if not self._pending:
            return
        merged = pc.unique(pa.concat_arrays(self._pending)) if len(self._pending) > 1 else self._pending[0]
        if len(merged) > self._cap:
            self._stop(len(merged))
        else:
            self._pending = [merged]
            self._pending_len = len(merged)

    def _distinct(self) -> tuple[int | None, bool]:
        if self._unsupported:
            return None, False
        if self._lower_bound is not None:
            return self._lower_bound, True
        if len(self._pending) > 1:
            self._pending = [pc.unique(pa.concat_arrays(self._pending))]
        return (len(self._pending[0]) if self._pending else 0), False

    def _extreme(self, scalars: list[pa.Scalar], which: str) -> Any:
        if not scalars or self.kind not in ("numeric", "bool", "temporal"):
            return None
        value = pc.min_max(pa.array(scalars, type=scalars[0].type))[which]
        if self.kind == "temporal":
            return pc.cast(value, pa.string()).as_py()
        return _json_number(value.as_py())

    def result(self) -> dict[str, Any]:
        """The JSON-safe statistics: min, max, mean, nulls, distinct, distinct_approx."""
        distinct, approx = self._distinct()
        mean = None
        if self.kind in ("numeric", "bool") and self._count:
            mean = _json_number(self._sum / self._count)
        out = {
            "min": self._extreme(self._mins, "min"),
            "max": self._extreme(self._maxs, "max"),
            "mean": mean,
            "nulls": int(self.nulls),
            "distinct": distinct,
            "distinct_approx": approx,
        }
        low, high = out["min"], out["max"]
        if (
            self._sample is not None
            and self._count
            and isinstance(low, int | float)
            and isinstance(high, int | float)
        ):
            sample = self._sample.values()
            sample = sample[np.isfinite(sample)]
            if len(sample):
                out["histogram"] = histogram(sample, float(low), float(high), self._count)
        return out


class TableStats:
    """Statistics of every column of a table, fed one record batch at a time."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        cap, samples = distinct_cap(len(schema)), sample_cap(len(schema))
        self.columns = [ColumnStats(field.type, cap, samples) for field in schema]
        self.num_rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.num_rows += batch.num_rows
        for col, arr in zip(self.columns, batch.columns, strict=True):
            col.add(arr)

    def schema_entries(self) -> list[dict[str, Any]]:
        return [{"name": f.name, "dtype": dtype_name(f)} for f in self.schema]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {f.name: col.result() for f, col in zip(self.schema, self.columns, strict=True)}
