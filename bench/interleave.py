"""Interleaved slices: how bench/serving.py measures (b)'s targets on a machine whose speed drifts.

On the machines these benchmarks ran on, the 2-loop MiniLM ceiling moved by up to 30% between two
5 s measurements taken one after the other. A target row measured once and divided by a ceiling
measured at another moment then mostly measures that drift. Here each target is a *block*: the
ceiling (one or more shapes) and one or more systems, each run for ``slice_s`` seconds in turn, for
``cycles`` cycles, the order reversed every other cycle (ceiling, gateway, direct, then direct,
gateway, ceiling, …).
With an even number of cycles every system's slices sit, on average, at the same moment of the
block, so a linear drift cancels; a system's share of the ceiling is the ratio of its mean rate to
the ceiling's mean rate over the same cycles (:func:`share`), with a 95% bootstrap interval over
the cycles. Each slice also records how idle the machine's cores were (``/proc/stat``, its warm-up
included).

    rows = run_slices(console, "aicloud, 2 workers", {"ceiling": ..., "gateway": ..., "direct": ...}, 8)
    share(rows, "aicloud, 2 workers", "gateway")  # {"share": 0.88, "ci95": [0.86, 0.9], ...}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from loadgen import run_ceiling, run_load
from replica_metrics import batch_stats, scrape

#: The concurrency (b)'s throughput targets are stated at.
CONCURRENCY = 32
#: The ceiling's shapes: 2 loops x 1 thread, each loop's calls on this many sentences: 32 (the
#: deployments' max_batch_size) and 16 (the c=32 clients split over the two loops, what two batch
#: workers see); the faster of the two in a block is its ceiling.
CEILING_BATCHES = (32, 16)
#: Warm-up of each slice (the batcher settles within a few batches of ~0.1 s).
SLICE_WARMUP_S = 0.5
#: Bootstrap resamples for the 95% interval, and the seed (the interval is the same for the same rows).
RESAMPLES, SEED = 2000, 0
_STAT = Path("/proc/stat")


def cpu_jiffies() -> tuple[int, int] | None:
    """(idle + iowait, total) jiffies of all cores so far, or None where /proc/stat is missing."""
    try:
        fields = [int(v) for v in _STAT.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])  # user … steal; guest time is inside user


def idle_between(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


def order_of(systems: list[str], cycle: int) -> list[str]:
    """The run order in ``cycle`` (from 1): as given in odd cycles, reversed in even ones."""
    return systems if cycle % 2 else systems[::-1]


def run_slices(
    console: Any,
    block: str,
    runners: dict[str, Callable[[], dict[str, Any]]],
    cycles: int,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Run each of ``runners`` (``system`` → one slice, returning a row with ``req_s``) once per
    cycle in :func:`order_of`; rows carry ``block``, ``cycle``, ``system``, ``workers``, ``idle``."""
    rows: list[dict[str, Any]] = []
    for cycle in range(1, cycles + 1):
        line = []
        for system in order_of(list(runners), cycle):
            before = cpu_jiffies()
            r = runners[system]()
            idle = idle_between(before, cpu_jiffies())
            rows.append(
                {**r, "block": block, "cycle": cycle, "system": system, "workers": workers, "idle": idle}
            )
            line.append(f"{system} {r['req_s']}")
        console.print(f"  {block}, cycle {cycle}/{cycles}: " + ", ".join(line))
    return rows


def is_ceiling(system: str) -> bool:
    """Whether a slice's ``system`` is a ceiling shape (``ceiling``, ``ceiling, 2 x 16``, …)."""
    return system.startswith("ceiling")


def _rates(rows: list[dict[str, Any]], block: str, system: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(system's rate, the ceiling's rate, the ceiling's name) per cycle of ``block`` that ran the
    system and every ceiling shape; with several shapes, the one whose mean rate is highest there."""
    by_cycle: dict[int, dict[str, float]] = {}
    for r in rows:
        if r.get("block") == block and r.get("req_s") is not None:
            by_cycle.setdefault(r["cycle"], {})[r["system"]] = float(r["req_s"])
    shapes = sorted({name for rates in by_cycle.values() for name in rates if is_ceiling(name)})
    both = [c for c in sorted(by_cycle) if {system, *shapes} <= by_cycle[c].keys()]
    if not shapes or not both:
        return np.asarray([]), np.asarray([]), ""
    top = max(shapes, key=lambda name: sum(by_cycle[c][name] for c in both))
    return (
        np.asarray([by_cycle[c][system] for c in both]),
        np.asarray([by_cycle[c][top] for c in both]),
        top,
    )


def _resampled(mine: np.ndarray, ceiling: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES ratios of means, each over cycles drawn with replacement (pairs kept together)."""
    pick = rng.integers(0, len(mine), size=(RESAMPLES, len(mine)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return mine[pick].mean(axis=1) / ceiling[pick].mean(axis=1)


def share(rows: list[dict[str, Any]], block: str, system: str) -> dict[str, Any] | None:
    """``system``'s share of the ceiling in ``block``: the ratio of the mean rates over the cycles
    that ran both, with the per-cycle shares, a 95% bootstrap interval and the mean idle share of
    the cores during the system's slices; None without such a cycle. With several ceiling shapes
    in the block, the fastest of them there is the ceiling (the stricter yardstick)."""
    mine, ceiling, ceiling_name = _rates(rows, block, system)
    if not len(mine) or ceiling.mean() <= 0:
        return None
    boot = _resampled(mine, ceiling, np.random.default_rng(SEED))
    mine_rows = [r for r in rows if r.get("block") == block and r["system"] == system]
    idle = [r["idle"] for r in mine_rows if r.get("idle") is not None]
    return {
        "share": round(float(mine.mean() / ceiling.mean()), 3),
        "ci95": [round(float(v), 3) for v in np.nanpercentile(boot, [2.5, 97.5])],
        "req_s": round(float(mine.mean()), 1),
        "ceiling_req_s": round(float(ceiling.mean()), 1),
        "ceiling": ceiling_name,
        "cycles": [round(float(m / c), 3) if c else None for m, c in zip(mine, ceiling, strict=True)],
        "idle": round(sum(idle) / len(idle), 3) if idle else None,
    }


def ratio_of_shares(
    rows: list[dict[str, Any]], mine: tuple[str, str], theirs: tuple[str, str]
) -> dict[str, Any] | None:
    """``mine`` = (block, system) over ``theirs``: the ratio of the two shares of the ceiling (so of
    the throughputs at the same machine speed), with a 95% bootstrap interval (the two blocks'
    cycles resampled independently)."""
    a, b = _rates(rows, *mine)[:2], _rates(rows, *theirs)[:2]
    if not len(a[0]) or not len(b[0]) or a[1].mean() <= 0 or b[0].mean() <= 0:
        return None
    rng = np.random.default_rng(SEED)
    boot = _resampled(*a, rng) / _resampled(*b, rng)
    value = (a[0].mean() / a[1].mean()) / (b[0].mean() / b[1].mean())
    return {
        "value": round(float(value), 3),
        "ci95": [round(float(v), 3) for v in np.nanpercentile(boot, [2.5, 97.5])],
        "raw_req_s_ratio": round(float(a[0].mean() / b[0].mean()), 3),
    }


def target_slices(
    console: Any,
    encode: Callable[[int], Callable[[], Any]],
    systems: dict[str, tuple[str, str]],
    body: Any,
    args: Any,
    block: str,
    workers: int,
    replica: tuple[str, str] | None = None,
    pause: Callable[[], AbstractContextManager[Any]] | None = None,
) -> list[dict[str, Any]]:
    """(b)'s targets: ``systems`` (name → (url, token)) at c=32 and the 2-loop ceilings
    (``CEILING_BATCHES``), in ``args.cycles`` interleaved cycles of ``args.slice`` s
    (:func:`run_slices`); serving_report.targets reads them. With ``replica`` (aicloud's (base URL,
    key)), each HTTP slice also gets the replica's batch mean and workers' busy share. With ``pause``
    (a peer's :meth:`PeerServer.paused`), the ceiling slices run inside it, so that the idle server's
    own loops do not slow them (aicloud's idle control plane and replica use about 0.01 core)."""
    import torch

    def ceiling(batch: int) -> Callable[[], dict[str, Any]]:
        def one() -> dict[str, Any]:
            before = torch.get_num_threads()
            torch.set_num_threads(1)  # 2 loops x 1 thread on the 2 cpus
            try:
                with pause() if pause is not None else contextlib.nullcontext():
                    r = run_ceiling(encode(batch), batch, args.slice, parallel=2, warmup=SLICE_WARMUP_S)
                return {**r, "batch": batch}
            finally:
                torch.set_num_threads(before)

        return one

    def load(url: str, token: str) -> Callable[[], dict[str, Any]]:
        def one() -> dict[str, Any]:
            before = scrape(*replica) if replica else None
            r = run_load(url, token, body, CONCURRENCY, args.slice, SLICE_WARMUP_S)
            stats = batch_stats(before, scrape(*replica), workers) if replica and before else {}
            return {**r, **stats, "concurrency": CONCURRENCY}

        return one

    runners = {f"ceiling, 2 x {b}": ceiling(b) for b in CEILING_BATCHES}
    runners.update({name: load(*where) for name, where in systems.items()})
    return run_slices(console, block, runners, args.cycles, workers)
