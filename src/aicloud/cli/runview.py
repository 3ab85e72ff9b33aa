"""What ``aicloud run show`` and ``aicloud run compare`` draw, as pure functions: a metric's
sparkline and statistics, the params that differ between runs, the best value of a metric, and
how many run columns fit the terminal. No I/O here (unit-tested in tests/unit/test_sparkline.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aicloud.schemas.jobs import metric_goal

BARS = "▁▂▃▄▅▆▇█"
BEST = "★"


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def sparkline(values: Sequence[float | None], width: int = 20) -> str:
    """``values`` as at most ``width`` bars, lowest ``▁`` to highest ``█``.

    A longer series is cut into ``width`` consecutive buckets, each drawn as its mean; a gap
    (None, NaN, infinity) is a space; a flat series is a row of middle bars.
    """
    if width < 1 or not values:
        return ""
    n = len(values)
    count = min(width, n)
    buckets = [values[i * n // count : (i + 1) * n // count] for i in range(count)]
    means: list[float | None] = []
    for bucket in buckets:
        finite = [v for v in map(_finite, bucket) if v is not None]
        means.append(sum(finite) / len(finite) if finite else None)
    known = [m for m in means if m is not None]
    if not known:
        return " " * len(means)
    low, high = min(known), max(known)
    top = len(BARS) - 1
    return "".join(
        " " if m is None else BARS[top // 2 if high == low else round((m - low) / (high - low) * top)]
        for m in means
    )


@dataclass(frozen=True)
class MetricStats:
    """One metric of a run: the last point's value, the extremes and how many steps it has."""

    name: str
    last: float | None
    min: float | None
    max: float | None
    steps: int
    first_step: int | None
    last_step: int | None


def metric_stats(name: str, steps: Sequence[int], values: Sequence[float | None]) -> MetricStats:
    """Statistics of a series in step order (as ``GET /runs/{id}/metrics`` returns it)."""
    finite = [v for v in map(_finite, values) if v is not None]
    return MetricStats(
        name=name,
        last=_finite(values[-1]) if values else None,
        min=min(finite) if finite else None,
        max=max(finite) if finite else None,
        steps=len(steps),
        first_step=steps[0] if steps else None,
        last_step=steps[-1] if steps else None,
    )


def param_text(value: Any) -> str:
    """A param as a cell: strings bare, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def differing_params(params: Sequence[dict[str, Any]]) -> list[str]:
    """The names (sorted) of the params whose values are not the same in every run (a param
    one run lacks differs)."""
    names = sorted({k for p in params for k in p})
    missing = object()
    return [
        name
        for name in names
        if len({json.dumps(p.get(name, missing), sort_keys=True, default=repr) for p in params}) > 1
    ]


def best_of(name: str, values: Sequence[float | None]) -> set[int]:
    """The positions holding the best value of metric ``name`` (``metric_goal``): empty when
    the name says neither higher nor lower is better, fewer than two runs have it, or all tie."""
    goal = metric_goal(name)
    known = {i: v for i, v in enumerate(map(_finite, values)) if v is not None}
    if goal is None or len(known) < 2 or len(set(known.values())) == 1:
        return set()
    best = max(known.values()) if goal == "max" else min(known.values())
    return {i for i, v in known.items() if v == best}


def runs_per_block(width: int, label_width: int, column_width: int, runs: int) -> int:
    """How many run columns of ``column_width`` fit beside a label column of ``label_width`` in
    ``width`` terminal columns (a Rich table's borders and padding: 3 per column, 1 at the
    end); at least one."""
    return max(1, min(runs, (width - 1 - (label_width + 3)) // (column_width + 3)))


def blocks(count: int, size: int) -> list[range]:
    """``range(count)`` cut into consecutive blocks of at most ``size``."""
    return [range(start, min(start + size, count)) for start in range(0, count, max(1, size))]
