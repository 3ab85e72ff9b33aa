"""Histograms of numeric columns in a dataset's profile (``data.stats``): exact for small columns,
from a bounded, evenly strided sample for large ones; none for booleans, strings or empty columns."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from aicloud.data.stats import HISTOGRAM_BINS, ColumnStats, TableStats, _Sample


def _stats(values: list[object] | np.ndarray, pieces: int = 1, samples: int = 10_000) -> dict[str, object]:
    col = ColumnStats(pa.array(values).type, samples=samples)
    for part in np.array_split(np.asarray(values, dtype=object), pieces):
        col.add(pa.array(list(part), type=pa.array(values).type))
    return col.result()


def test_a_small_numeric_column_has_an_exact_histogram() -> None:
    hist = _stats(list(range(100)))["histogram"]
    assert len(hist["edges"]) == HISTOGRAM_BINS + 1 and hist["edges"][0] == 0 and hist["edges"][-1] == 99
    assert sum(hist["counts"]) == 100 and hist["counts"] == [5] * 20 and not hist["sampled"]


def test_a_large_column_is_sampled_evenly_and_scaled() -> None:
    values = np.concatenate([np.zeros(50_000), np.ones(50_000)])  # first half 0, second half 1
    st = _stats(values, pieces=7, samples=1000)
    hist = st["histogram"]
    assert hist["sampled"] and abs(sum(hist["counts"]) - 100_000) < 100
    assert abs(hist["counts"][0] - 50_000) < 1000 and abs(hist["counts"][-1] - 50_000) < 1000


def test_the_sample_stays_bounded_and_strided() -> None:
    sample = _Sample(cap=100)
    for start in range(0, 10_000, 333):
        sample.add(np.arange(start, min(start + 333, 10_000), dtype=np.float64))
    kept = sample.values()
    assert len(kept) <= 200 and sample.stride > 1
    assert np.all(np.diff(kept) == sample.stride)  # every stride-th value, across pieces


def test_no_histogram_for_booleans_strings_constant_or_empty_columns() -> None:
    assert "histogram" not in _stats([True, False, True])
    assert "histogram" not in _stats(["a", "b"])
    assert "histogram" not in _stats([None, None])
    constant = _stats([3.0, 3.0, 3.0])["histogram"]
    assert constant["counts"] == [3] and constant["edges"] == [3.0, 3.0]


def test_a_table_profile_with_histograms_is_json_safe() -> None:
    batch = pa.record_batch({"x": [1.0, float("inf"), 2.0], "n": [1, 2, 3], "s": ["a", "b", "c"]})
    table = TableStats(batch.schema)
    table.add(batch)
    stats = table.stats()
    json.dumps(stats, allow_nan=False)
    assert "histogram" not in stats["x"]  # an infinity: no finite range to bin
    assert sum(stats["n"]["histogram"]["counts"]) == 3
