"""Request statistics of each endpoint, per model version, kept by the gateway in memory.

Every call the gateway forwarded is recorded under the version of the replica that answered it
(:attr:`~aicloud.gateway.registry.ReplicaSlot.version`: a model version's id, ``""`` for a Service):
its latency from arrival to the answer's head and whether it failed (a 5xx from the replica, or
the gateway could not get an answer). So a canary's two versions can be compared side by side
(``GET /api/v1/deployments/{name}/metrics``, ``aicloud deploy show``).

Latencies go into fixed, log-spaced buckets (:data:`BOUNDS_S`); quantiles are read from them by
interpolating inside the bucket, so they are exact to a bucket's width (about 20%) and a record
costs one bisect and a few increments on the event loop. Two views: everything since the control
plane started, and the last :data:`WINDOW_S` seconds (one histogram per second, in a ring). Each
endpoint also keeps a history of its last :data:`HISTORY_MINUTES` minutes, one row per minute of
wall-clock time for all its versions together (requests, errors, p50/p99, and the most ready
replicas the deployment controller noted that minute): the console's charts start from it.
Statistics start again at zero when the control plane restarts.

Edge nodes report what their replicas served (docs/edge.md), the calls the gateway sent them and
the node's local ones alike: :meth:`EndpointStats.record_edge` keeps those counts apart (requests,
errors, the sum of latencies), so a call is never counted twice in the gateway's own statistics.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BOUNDS_S", "HISTORY_MINUTES", "WINDOW_S", "EndpointStats", "VersionStats", "quantile"]

#: Upper bounds of the latency buckets, in seconds: 0.25 ms to 120 s, 5 buckets per decade;
#: a last bucket takes anything slower.
BOUNDS_S: tuple[float, ...] = tuple(0.00025 * 10 ** (i / 5) for i in range(29))
#: The recent window, in seconds.
WINDOW_S = 60
#: How many minutes of per-minute history an endpoint keeps.
HISTORY_MINUTES = 60


def quantile(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the latencies counted in ``buckets`` (seconds); None if empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            low = BOUNDS_S[i - 1] if i > 0 else 0.0
            high = BOUNDS_S[i] if i < len(BOUNDS_S) else BOUNDS_S[-1] * 2
            return low + (high - low) * max(0.0, rank - seen) / n
        seen += n
    return BOUNDS_S[-1] * 2


class VersionStats:
    """Counts and latencies of one version's calls: since start and over the recent window."""

    __slots__ = ("_clock", "_ring", "_stamps", "buckets", "errors", "requests", "seconds")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.requests = 0
        self.errors = 0
        self.seconds = 0.0  # latencies summed (a Prometheus histogram's _sum)
        self.buckets = [0] * (len(BOUNDS_S) + 1)
        # second → [requests, errors, bucket counts...]; slot = second % WINDOW_S
        self._stamps = [-1] * WINDOW_S
        self._ring: list[list[int]] = [[] for _ in range(WINDOW_S)]

    def record(self, seconds: float, error: bool) -> None:
        i = bisect.bisect_left(BOUNDS_S, seconds)
        self.requests += 1
        self.seconds += seconds
        self.buckets[i] += 1
        second = int(self._clock())
        slot = second % WINDOW_S
        row = self._ring[slot]
        if self._stamps[slot] != second:
            row = self._ring[slot] = [0] * (len(BOUNDS_S) + 3)
            self._stamps[slot] = second
        row[0] += 1
        row[2 + i] += 1
        if error:
            self.errors += 1
            row[1] += 1

    def snapshot(self) -> dict[str, Any]:
        """Since start: requests, errors, p50/p99 in ms; ``window``: the same over the last
        :data:`WINDOW_S` seconds, with the request rate and the error rate."""
        now = int(self._clock())
        recent = [0] * (len(BOUNDS_S) + 3)
        for slot, stamp in enumerate(self._stamps):
            if stamp >= 0 and now - stamp < WINDOW_S:
                recent = [a + b for a, b in zip(recent, self._ring[slot], strict=True)]
        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": _ms(quantile(self.buckets, 0.5)),
            "p99_ms": _ms(quantile(self.buckets, 0.99)),
            "window": {
                "seconds": WINDOW_S,
                "requests": recent[0],
                "errors": recent[1],
                "rate_per_s": round(recent[0] / WINDOW_S, 3),
                "error_rate": round(recent[1] / recent[0], 4) if recent[0] else 0.0,
                "p50_ms": _ms(quantile(recent[2:], 0.5)),
                "p99_ms": _ms(quantile(recent[2:], 0.99)),
            },
        }


class EndpointStats:
    """One endpoint's :class:`VersionStats`, by version (``""``: a Service, or not known), and its
    per-minute history (all versions together)."""

    __slots__ = ("_clock", "_minutes", "_wall", "codes", "edge", "versions")

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._wall = wall
        self.versions: dict[str, VersionStats] = {}
        #: (version, status code) → calls since start (code 0: no answer), for /metrics
        self.codes: dict[tuple[str, int], int] = {}
        #: version → [requests, errors, latency seconds summed], as edge nodes reported them
        self.edge: dict[str, list[float]] = {}
        # minute (wall clock // 60) → [requests, errors, ready, bucket counts...], oldest first
        self._minutes: dict[int, list[int]] = {}

    def _minute(self) -> list[int]:
        minute = int(self._wall() // 60)
        row = self._minutes.get(minute)
        if row is None:
            row = self._minutes[minute] = [0, 0, 0] + [0] * (len(BOUNDS_S) + 1)
            while len(self._minutes) > HISTORY_MINUTES:
                del self._minutes[next(iter(self._minutes))]
        return row

    def record(self, version: str, seconds: float, status: int) -> None:
        """A call answered with ``status`` (0: no answer) after ``seconds``."""
        stats = self.versions.get(version)
        if stats is None:
            stats = self.versions[version] = VersionStats(self._clock)
        error = status >= 500 or status == 0
        stats.record(seconds, error)
        self.codes[version, status] = self.codes.get((version, status), 0) + 1
        row = self._minute()
        row[0] += 1
        row[1] += error
        row[3 + bisect.bisect_left(BOUNDS_S, seconds)] += 1

    def record_edge(self, version: str, requests: int, errors: int, latency_s_sum: float) -> None:
        """An edge node's report of what a replica of ``version`` served since its previous one."""
        row = self.edge.setdefault(version, [0, 0, 0.0])
        row[0] += requests
        row[1] += errors
        row[2] += latency_s_sum

    def edge_snapshot(self) -> dict[str, dict[str, Any]]:
        """By version: ``requests``, ``errors`` and ``mean_ms`` as the edge nodes reported them."""
        return {
            version: {
                "requests": int(row[0]),
                "errors": int(row[1]),
                "mean_ms": round(1000 * row[2] / row[0], 3) if row[0] else None,
            }
            for version, row in list(self.edge.items())
        }

    def note_ready(self, replicas: int) -> None:
        """The deployment controller's count of ready replicas now (the minute keeps the most)."""
        row = self._minute()
        row[2] = max(row[2], replicas)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {version: stats.snapshot() for version, stats in list(self.versions.items())}

    def history(self) -> list[dict[str, Any]]:
        """The last :data:`HISTORY_MINUTES` minutes that saw a call or a controller pass, oldest
        first: ``t`` (the minute's start, Unix seconds), requests, errors, rate per second, p50/p99
        in ms (None without calls), the most ready replicas."""
        out = []
        for minute, row in sorted(self._minutes.items()):
            buckets = row[3:]
            out.append(
                {
                    "t": minute * 60,
                    "requests": row[0],
                    "errors": row[1],
                    "rate_per_s": round(row[0] / 60, 3),
                    "p50_ms": _ms(quantile(buckets, 0.5)),
                    "p99_ms": _ms(quantile(buckets, 0.99)),
                    "ready": row[2],
                }
            )
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
