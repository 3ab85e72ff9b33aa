"""How metric points are stored: packed chunks of a series, one row per chunk.

A series (one metric of one run) is kept as rows of ``metric_chunks``, each holding up to
``CHUNK_POINTS`` points in the order they were logged, plus one ``run_metrics`` row with its
last point, min, max and count (``tables.RunMetricRow``). A chunk's ``data`` is:

    byte 0      format, 1
    bytes 1..   zlib (level 1) of the chunk's 3 x count words of 8 bytes, byte-shuffled:
                step deltas (int64, the first against 0), timestamps (float64), values
                (float64, NaN for a value that was not finite), all little-endian; the
                shuffle stores byte 0 of every word, then byte 1, ... so that the bytes that
                barely change (a step delta's high bytes, a timestamp's exponent) compress
                away.

Reading a run's 100 metrics is then 100 rows, not 100,000; and a billion points take about
10 bytes each instead of a row and an index entry (about 150). Appending rewrites only the
last chunk of each series a batch touches.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np

from aicloud.entities.series import MetricArrays

CHUNK_POINTS = 1024
"""The most points one chunk row holds."""

FORMAT = 1
_WORD = 8


def pack(series: MetricArrays) -> bytes:
    """One chunk's ``data`` (at most ``CHUNK_POINTS`` points, not checked here)."""
    steps = series.steps.astype("<i8")
    deltas = np.diff(steps, prepend=np.int64(0)) if len(steps) else steps
    words = np.concatenate(
        [
            deltas.view(np.uint8),
            series.timestamps.astype("<f8").view(np.uint8),
            series.values.astype("<f8").view(np.uint8),
        ]
    )
    shuffled = words.reshape(-1, _WORD).T.tobytes()
    return bytes([FORMAT]) + zlib.compress(shuffled, 1)


def unpack(data: bytes) -> MetricArrays:
    """The points of one chunk, as stored."""
    if not data or data[0] != FORMAT:
        raise ValueError(f"unknown metric chunk format {data[:1]!r}")
    raw = np.frombuffer(zlib.decompress(data[1:]), dtype=np.uint8)
    words = raw.reshape(_WORD, -1).T.copy().reshape(-1)
    n = len(words) // (3 * _WORD)
    columns = words.view("<i8"), words.view("<f8")
    steps = np.cumsum(columns[0][:n]).astype(np.int64)
    return MetricArrays(
        steps, columns[1][2 * n :].astype(np.float64), columns[1][n : 2 * n].astype(np.float64)
    )


def concat(parts: list[MetricArrays]) -> MetricArrays:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return MetricArrays.empty()
    return MetricArrays(
        np.concatenate([p.steps for p in parts]),
        np.concatenate([p.values for p in parts]),
        np.concatenate([p.timestamps for p in parts]),
    )


def is_ordered(series: MetricArrays) -> bool:
    """Whether the points are in series order already (by step, then timestamp)."""
    if len(series) < 2:
        return True
    step_delta = np.diff(series.steps)
    return bool(((step_delta > 0) | ((step_delta == 0) & (np.diff(series.timestamps) >= 0))).all())


def in_series_order(series: MetricArrays) -> MetricArrays:
    """The points ordered by step, then timestamp, then as logged (a stable sort, skipped when
    they already are: the usual case)."""
    if is_ordered(series):
        return series
    return series.take(np.lexsort((series.timestamps, series.steps)))


def split(series: MetricArrays) -> Iterator[MetricArrays]:
    """``series`` cut into chunks of at most ``CHUNK_POINTS`` points, in order."""
    for start in range(0, len(series), CHUNK_POINTS):
        yield series.take(np.arange(start, min(start + CHUNK_POINTS, len(series))))
