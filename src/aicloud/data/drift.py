"""Data drift between a reference sample and a current one, column by column.

    ref = sample_table("csv", f_ref)                 # {column: ColumnSample}, bounded by MAX_SAMPLE
    cur = sample_table("csv", f_cur)
    report = drift_report(ref, cur, threshold=0.5)   # a JSON-safe dict

Each column common to both sides gets one test, chosen by its kind and the smaller side's row count:

* numbers, fewer than :data:`SMALL_SAMPLE` values: the two-sample Kolmogorov-Smirnov test; the
  statistic is its p-value, drifted when it is below :data:`P_VALUE` (0.05);
* numbers, more: the Wasserstein (earth mover's) distance divided by the reference's standard
  deviation, drifted above :data:`WASSERSTEIN` (0.1: the distribution moved by a tenth of a std);
* strings and booleans, fewer: the chi-square test of the two sides' category counts (p-value);
* strings and booleans, more: the Jensen-Shannon distance (base 2, from 0 to 1) of their category
  frequencies, drifted above :data:`JENSEN_SHANNON` (0.1).

The report's ``drift_score`` is the share of tested columns that drifted, a number from 0 to 1
(the signal an alert rule reads), and ``drifted`` is ``drift_score >= threshold``. Columns present
on one side only are listed, never tested; columns of other kinds (dates, nested values) or
without values are listed under ``skipped`` with the reason.

Run on untrusted files in the parser worker (:mod:`aicloud.data.worker`), never in the control plane.
Above :data:`MAX_SAMPLE` values a column is sampled evenly over the whole file, deterministically,
so a report over any number of rows costs about the same.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from aicloud.data.formats import normalize_format, translate_errors
from aicloud.data.limits import DEFAULT_LIMITS, ParseLimits
from aicloud.data.profile import table_items
from aicloud.data.stats import _kind, _Sample
from aicloud.errors import InvalidDataError, UnsupportedFormatError, ValidationError

SMALL_SAMPLE = 1000  # below this many values on either side: a statistical test, else a distance
MAX_SAMPLE = 5000  # values kept per column and side (an evenly strided sample above it)
P_VALUE = 0.05
WASSERSTEIN = 0.1
JENSEN_SHANNON = 0.1
DEFAULT_THRESHOLD = 0.5
MAX_CATEGORIES = 50  # the most frequent categories tested; the rest count as one "other" category
_NULL = "\x00null"
_OTHER = "\x00other"

__all__ = ["ColumnSample", "column_drift", "drift_report", "sample_table"]


@dataclass
class ColumnSample:
    """A column's values (a bounded sample) and its kind: ``numeric`` (floats, NaN and nulls dropped)
    or ``categorical`` (text, nulls as one category); ``rows``: the rows the file has."""

    kind: str
    values: np.ndarray
    rows: int


def _categorical(arr: pa.Array) -> np.ndarray:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    return np.array([_NULL if v is None else v for v in arr.to_pylist()], dtype=object)


def _numeric(arr: pa.Array) -> np.ndarray:
    values = arr.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _column_kind(t: pa.DataType) -> str | None:
    kind = _kind(t)
    if kind == "numeric" and not pa.types.is_boolean(t):
        return "numeric"
    if kind in ("string", "bool"):
        return "categorical"
    return None


def sample_table(
    fmt: str,
    f: BinaryIO,
    limits: ParseLimits = DEFAULT_LIMITS,
    *,
    cap: int = MAX_SAMPLE,
) -> tuple[dict[str, ColumnSample], dict[str, str], int]:
    """The CSV, JSON Lines or Parquet file ``f`` as ``(samples, unsupported, rows)``: a bounded,
    evenly spread sample per numeric or categorical column; the other columns with their kind."""
    fmt = normalize_format(fmt)
    if fmt == "npz":
        raise UnsupportedFormatError("drift reports read tables (CSV, JSON Lines, Parquet), not NPZ arrays")
    items, what = table_items(fmt, f, limits)
    kinds: dict[str, str | None] = {}
    samples: dict[str, _Sample] = {}
    rows = 0
    for item in items:
        with translate_errors(what):
            if isinstance(item, pa.Schema):
                kinds = {field.name: _column_kind(field.type) for field in item}
                samples = {name: _Sample(cap) for name, kind in kinds.items() if kind}
                rows = 0
                continue
            rows += item.num_rows
            for name, sample in samples.items():
                arr = item.column(name)
                if pa.types.is_dictionary(arr.type):
                    arr = arr.dictionary_decode()
                sample.add(_numeric(arr) if kinds[name] == "numeric" else _categorical(arr))
    if rows == 0:
        raise InvalidDataError(f"{what} has no rows")
    out = {}
    for name, sample in samples.items():
        values = sample.values()
        if len(values) > cap:
            values = values[:: math.ceil(len(values) / cap)]
        if kinds[name] == "numeric":
            values = values[np.isfinite(values.astype(np.float64))]
        out[name] = ColumnSample(str(kinds[name]), values, rows)
    others = {name: "unsupported" for name, kind in kinds.items() if kind is None}
    return out, others, rows


def _ks_p_value(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(ref, cur).pvalue)


def _wasserstein(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    scale = float(np.std(ref))
    distance = float(wasserstein_distance(ref, cur))
    if scale > 0:
        return distance / scale
    return 0.0 if distance == 0 else distance / max(abs(float(np.mean(ref))), 1.0)


def _counts(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Category counts of both sides over the same categories (the most frequent, then "other")."""
    c_ref, c_cur = Counter(ref.tolist()), Counter(cur.tolist())
    both = c_ref + c_cur
    keep = [k for k, _ in both.most_common(MAX_CATEGORIES)]
    a = [c_ref.get(k, 0) for k in keep]
    b = [c_cur.get(k, 0) for k in keep]
    rest_a, rest_b = sum(c_ref.values()) - sum(a), sum(c_cur.values()) - sum(b)
    if rest_a or rest_b:
        a.append(rest_a)
        b.append(rest_b)
    return np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)


def _chi2_p_value(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import chi2_contingency

    a, b = _counts(ref, cur)
    if len(a) < 2:
        return 1.0  # one category on both sides: nothing can have moved
    return float(chi2_contingency(np.vstack([a, b])).pvalue)


def _jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    a, b = _counts(ref, cur)
    value = float(jensenshannon(a / a.sum(), b / b.sum(), base=2))
    return 0.0 if math.isnan(value) else value


def column_drift(ref: ColumnSample, cur: ColumnSample, *, small: int = SMALL_SAMPLE) -> dict[str, Any]:
    """``{test, statistic, threshold, drifted}`` for one column's two samples (of the same kind):
    a test (p-value, drifted below the threshold) when either side has fewer than ``small`` values,
    else a distance (drifted above it)."""
    n = min(len(ref.values), len(cur.values))
    if ref.kind == "numeric":
        test, fn, threshold = (
            ("ks", _ks_p_value, P_VALUE) if n < small else ("wasserstein", _wasserstein, WASSERSTEIN)
        )
    else:
        test, fn, threshold = (
            ("chi2", _chi2_p_value, P_VALUE)
            if n < small
            else ("jensen_shannon", _jensen_shannon, JENSEN_SHANNON)
        )
    statistic = fn(ref.values, cur.values)
    is_p_value = test in ("ks", "chi2")
    drifted = statistic < threshold if is_p_value else statistic > threshold
    return {
        "test": test,
        "statistic": round(statistic, 6),
        "threshold": threshold,
        "drifted": bool(drifted),
        "reference_values": len(ref.values),
        "current_values": len(cur.values),
    }


def check_threshold(threshold: float) -> float:
    """ValidationError unless ``threshold`` (the drifted share of columns) is in (0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise ValidationError.field("threshold", f"must be a number above 0 and at most 1, got {threshold!r}")
    return float(threshold)


def drift_report(
    ref: dict[str, ColumnSample],
    cur: dict[str, ColumnSample],
    *,
    columns: list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    unsupported: tuple[dict[str, str], dict[str, str]] = ({}, {}),
    rows: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The report over ``columns`` (default: every column of either side): per-column results, the
    columns found on one side only, the skipped ones, the drift score and the verdict."""
    threshold = check_threshold(threshold)
    names_ref = list(ref) + [n for n in unsupported[0] if n not in ref]
    names_cur = list(cur) + [n for n in unsupported[1] if n not in cur]
    if columns is not None:
        unknown = [c for c in columns if c not in names_ref and c not in names_cur]
        if unknown:
            raise ValidationError.field("columns", f"no such column in either dataset: {', '.join(unknown)}")
        names_ref = [n for n in names_ref if n in columns]
        names_cur = [n for n in names_cur if n in columns]
    out_cols: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in [n for n in names_ref if n in names_cur]:
        a, b = ref.get(name), cur.get(name)
        if a is None or b is None:
            skipped.append({"column": name, "reason": "not a number, text or boolean column"})
        elif a.kind != b.kind:
            skipped.append({"column": name, "reason": f"{a.kind} in the reference, {b.kind} now"})
        elif len(a.values) == 0 or len(b.values) == 0:
            skipped.append({"column": name, "reason": "no values on one side"})
        else:
            out_cols.append({"column": name, "kind": a.kind, **column_drift(a, b)})
    tested = len(out_cols)
    n_drifted = sum(1 for c in out_cols if c["drifted"])
    score = n_drifted / tested if tested else 0.0
    n_ref, n_cur = rows if rows is not None else (_rows(ref), _rows(cur))
    return {
        "columns": out_cols,
        "only_in_reference": [n for n in names_ref if n not in names_cur],
        "only_in_current": [n for n in names_cur if n not in names_ref],
        "skipped": skipped,
        "reference_rows": n_ref,
        "current_rows": n_cur,
        "drifted_columns": n_drifted,
        "tested_columns": tested,
        "drift_score": round(score, 6),
        "threshold": threshold,
        "drifted": bool(tested and score >= threshold),
    }


def _rows(samples: dict[str, ColumnSample]) -> int:
    return max((s.rows for s in samples.values()), default=0)
