"""What an aicloud replica's ``/metrics`` says about one benchmark row: the mean batch size and how
busy the batch workers were (``aicloud_batch_seconds``: the model-call time of each batch).

    before = scrape(base, key)
    ...  # the load
    row.update(batch_stats(before, scrape(base, key), workers))
"""

from __future__ import annotations

import re
import time

import httpx

_SERIES = ("aicloud_batch_seconds_sum", "aicloud_batch_size_sum", "aicloud_batch_size_count")


def scrape(base: str, key: str) -> dict[str, float]:
    """The batch counters of the replica at ``base`` and the time they were read."""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    out = {"at": time.perf_counter()}
    for name in _SERIES:
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def batch_stats(before: dict[str, float], after: dict[str, float], workers: int) -> dict[str, float]:
    """``batch_mean`` (units per model call) and ``workers_busy`` (share of the wall time the batch
    workers spent in model calls) between two scrapes; empty when no batch ran."""
    d = {k: after[k] - before[k] for k in after}
    if d["aicloud_batch_size_count"] <= 0 or d["at"] <= 0:
        return {}
    return {
        "batch_mean": round(d["aicloud_batch_size_sum"] / d["aicloud_batch_size_count"], 1),
        "workers_busy": round(d["aicloud_batch_seconds_sum"] / d["at"] / max(1, workers), 3),
    }
