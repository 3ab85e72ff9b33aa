"""Metric series as columns of numbers, their summary, and their downsampling for charts.

``MetricArrays`` is one metric's points as three aligned numpy arrays (the store reads and
writes series this way; ``MetricPoint`` is the one-point form). ``lttb_indices`` picks at most
``max_points`` of a series' points by largest-triangle-three-buckets (Steinarsson, 2013): the
first and the last point always, then from each of ``max_points - 2`` equal buckets the point
that makes the largest triangle with the point picked in the bucket before and the mean of the
bucket after. Spikes survive (a lone outlier makes the largest triangle of its bucket), which a
plain stride would drop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class MetricArrays:
    """One metric's points: ``steps`` (int64), ``values`` (float64, NaN where the value logged was
    not finite) and ``timestamps`` (float64, Unix seconds), aligned and in series order."""

    steps: IntArray
    values: FloatArray
    timestamps: FloatArray

    @classmethod
    def of(cls, steps: Any, values: Any, timestamps: Any) -> MetricArrays:
        """From any sequences; non-finite values (infinities too) become NaN."""
        v = np.array(values, dtype=np.float64)
        v[~np.isfinite(v)] = math.nan
        arrays = cls(np.array(steps, dtype=np.int64), v, np.array(timestamps, dtype=np.float64))
        if not len(arrays.steps) == len(arrays.values) == len(arrays.timestamps):
            raise ValueError("steps, values and timestamps must have one entry per point")
        return arrays

    @classmethod
    def empty(cls) -> MetricArrays:
        return cls.of([], [], [])

    def __len__(self) -> int:
        return len(self.steps)

    def take(self, indices: npt.NDArray[np.intp]) -> MetricArrays:
        return MetricArrays(self.steps[indices], self.values[indices], self.timestamps[indices])

    def downsample(self, max_points: int) -> MetricArrays:
        """At most ``max_points`` of the points, picked by LTTB (itself when short enough)."""
        if len(self) <= max_points:
            return self
        return self.take(lttb_indices(self.steps.astype(np.float64), self.values, max_points))

    def columns(self) -> dict[str, list[Any]]:
        """``{"steps", "values", "timestamps"}`` as lists, NaN as None (JSON null)."""
        values: list[Any] = self.values.tolist()
        if np.isnan(self.values).any():
            values = [None if v != v else v for v in values]
        return {"steps": self.steps.tolist(), "values": values, "timestamps": self.timestamps.tolist()}


@dataclass(frozen=True)
class MetricStats:
    """One metric of a run at a glance: its point count, last point (by step, then timestamp),
    and the min and max of its finite values (None when it has none; ``last_value`` is NaN when
    the last value logged was not finite)."""

    name: str
    count: int
    last_step: int
    last_timestamp: float
    last_value: float
    min_value: float | None
    max_value: float | None


def lttb_indices(x: FloatArray, y: FloatArray, max_points: int) -> npt.NDArray[np.intp]:
    """The indices (ascending) of at most ``max_points`` points of ``(x, y)`` kept by LTTB.

    ``x`` is assumed sorted (a series' steps). All indices when the series is that short;
    with ``max_points`` of 1 or 2, the first (and last) point. A NaN ``y`` is never preferred
    over a number in its bucket: its triangle counts as empty.
    """
    return lttb_many([(x, y)], max_points)[0]


def lttb_many(series: list[tuple[FloatArray, FloatArray]], max_points: int) -> list[npt.NDArray[np.intp]]:
    """``lttb_indices`` of each ``(x, y)``, the long ones walked together.

    LTTB is a chain (each pick depends on the one before), so one series costs a loop of
    ``max_points`` small array steps; series whose buckets are about as wide (within a factor
    of two) share that loop, so a run page of 100 long series costs about what one does.
    """
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    out: list[npt.NDArray[np.intp]] = []
    groups: dict[int, list[int]] = {}
    for i, (x, _) in enumerate(series):
        n = len(x)
        if n <= max_points:
            out.append(np.arange(n))
        elif max_points <= 2:
            out.append(np.array([0, n - 1][:max_points]))
        else:
            out.append(np.empty(0, dtype=np.intp))
            width = -(-(n - 2) // (max_points - 2))
            groups.setdefault(int(width).bit_length(), []).append(i)
    for members in groups.values():
        for i, picked in zip(members, _lttb_group([series[i] for i in members], max_points), strict=True):
            out[i] = picked
    return out


def _lttb_group(series: list[tuple[FloatArray, FloatArray]], max_points: int) -> list[npt.NDArray[np.intp]]:
    """LTTB of series longer than ``max_points`` (at least 3), one loop over the buckets for all."""
    buckets = max_points - 2
    grids, gxs, gys, mean_xs, mean_ys = [], [], [], [], []
    for x, y in series:
        n = len(x)
        # Bucket b holds the inner points [edges[b], edges[b + 1]) of 1 .. n-2.
        edges = 1 + (np.arange(buckets + 1) * (n - 2)) // buckets
        sizes = np.diff(edges)
        inner_y = y[1:-1]
        known = ~np.isnan(inner_y)
        starts = edges[:-1] - 1
        sum_x = np.add.reduceat(x[1:-1], starts)
        sum_y = np.add.reduceat(np.where(known, inner_y, 0.0), starts)
        count_y = np.add.reduceat(known, starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_y = np.where(count_y > 0, sum_y / np.maximum(count_y, 1), np.nan)
        # The mean point of each bucket, then the last point (what the last bucket looks ahead to).
        mean_xs.append(np.append(sum_x / sizes, x[-1]))
        mean_ys.append(np.append(mean_y, y[-1]))
        grids.append(edges[:-1, None] + np.arange(int(sizes.max()))[None, :])
        grids[-1] = np.minimum(grids[-1], edges[1:, None] - 1)
    width = max(g.shape[1] for g in grids)
    # Pad every series' buckets to one width (repeating a bucket's last point) and stack them.
    grid = np.stack([np.pad(g, ((0, 0), (0, width - g.shape[1])), mode="edge") for g in grids])
    for g, (x, y) in zip(grid, series, strict=True):
        gxs.append(x[g])
        gys.append(y[g])
    gx, gy = np.stack(gxs), np.stack(gys)
    mean_x, mean_y = np.stack(mean_xs), np.stack(mean_ys)
    rows = np.arange(len(series))
    picked = np.empty((len(series), max_points), dtype=np.intp)
    picked[:, 0] = 0
    picked[:, -1] = [len(x) - 1 for x, _ in series]
    ax = np.array([x[0] for x, _ in series], dtype=np.float64)
    ay = np.array([y[0] for _, y in series], dtype=np.float64)
    for b in range(buckets):
        cx, cy = mean_x[:, b + 1, None], mean_y[:, b + 1, None]
        px, py = ax[:, None], ay[:, None]
        area = np.abs((px - cx) * (gy[:, b] - py) - (px - gx[:, b]) * (cy - py))
        area[np.isnan(area)] = -1.0
        j = area.argmax(axis=1)
        picked[:, b + 1] = grid[rows, b, j]
        ax, ay = gx[rows, b, j], gy[rows, b, j]
    return list(picked)
