"""Prometheus metrics of one replica, in a registry of its own (``GET /metrics``), and the model's
inference statistics (:class:`InferenceStats`) the Open Inference Protocol's statistics extension
answers (``GET /v2/models/<model>/stats``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


#: The routes (``ReplicaApp._route_label``) whose requests are inferences of the model.
INFER_ROUTES = frozenset({"/predict", "/v2/models/infer"})


@dataclass
class Duration:
    """A count and the nanoseconds it took in all (Triton's ``$duration_stat``)."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class InferenceStats:
    """The model's inference statistics since the replica started, updated on the event loop.

    ``success``/``fail``: inference requests (``/predict`` and OIP infer) answered below 400 or not,
    and their latency; ``queue``: time requests waited for their batch; ``compute_infer``: the model
    call's time, counted once per request in the batch; ``inference_count``: rows run;
    ``execution_count``: model calls; ``batches``: model calls and their time by batch size (rows).
    """

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, Duration] = field(default_factory=dict)

    def request(self, status: int, seconds: float) -> None:
        (self.success if status < 400 else self.fail).add(seconds)
        self.last_inference_ms = int(time.time() * 1000)

    def batch(self, size: int, queue_seconds: list[float], run_seconds: float) -> None:
        self.inference_count += size
        self.execution_count += 1
        for q in queue_seconds:
            self.queue.add(q)
        self.compute_infer.add(run_seconds * len(queue_seconds), len(queue_seconds))
        self.batches.setdefault(size, Duration()).add(run_seconds)


class ReplicaMetrics:
    """``aicloud_requests_total{route,code}``, ``aicloud_request_seconds{route}``,
    ``aicloud_queue_seconds``, ``aicloud_batch_size``, ``aicloud_batch_seconds`` (one model call; its
    sum's rate over ``batch_workers`` is how busy the workers are), ``aicloud_inflight_requests``,
    ``aicloud_cache_hits_total``, ``aicloud_cache_misses_total``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aicloud_requests", "Requests answered, by route and status code", ["route", "code"], registry=r
        )
        self.latency = Histogram(
            "aicloud_request_seconds",
            "Request latency in seconds",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "aicloud_queue_seconds",
            "Time a request waited for its batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "aicloud_batch_size", "Units (rows or items) per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_time = Histogram(
            "aicloud_batch_seconds",
            "Seconds one batch spent in the model call (a worker thread busy)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("aicloud_inflight_requests", "Requests being handled now", registry=r)
        self.cache_hits = Counter("aicloud_cache_hits", "Response cache hits", registry=r)
        self.cache_misses = Counter("aicloud_cache_misses", "Response cache misses", registry=r)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.inference = InferenceStats()

    def count(self, route: str, status: int, seconds: float) -> None:
        """One answered request: its count by route and status, and its latency by route."""
        children = self._children.get((route, status))
        if children is None:  # labels() looks the child up under a lock: once per pair is enough
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[route, status] = children
        children[0].inc()
        children[1].observe(seconds)
        if route in INFER_ROUTES:
            self.inference.request(status, seconds)

    def observe_batch(self, size: int, queue_seconds: list[float], run_seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_time.observe(run_seconds)
        self.inference.batch(size, queue_seconds, run_seconds)
        for q in queue_seconds:
            self.queue_time.observe(q)

    def render(self) -> bytes:
        return generate_latest(self.registry)
