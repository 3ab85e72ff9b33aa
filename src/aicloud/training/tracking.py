"""Metric sinks (batched HTTP, or a local JSONL file) and the system-metrics sampler.

:class:`BatchingSink` keeps ``log_metric`` cheap: points go to an in-memory buffer; a daemon thread
posts them every ``interval`` seconds, or as soon as ``batch_size`` points are waiting, one HTTP request
per batch (at most ``max_request`` points each). A failed post is retried with back-off; a server that
stays down makes the buffer keep the newest ``max_buffer`` points and say so on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import psutil

from aicloud.errors import AicloudError

Point = dict[str, Any]  # {"name", "step", "value", "timestamp"}


def _warn(message: str) -> None:
    print(f"[aicloud] warning: {message}", file=sys.stderr, flush=True)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, AicloudError):
        return exc.status_code >= 500
    return isinstance(exc, OSError)


class BatchingSink:
    """Buffers metric points and posts them in batches from a background thread."""

    def __init__(
        self,
        post: Callable[[list[Point]], None],
        *,
        interval: float = 1.0,
        batch_size: int = 1000,
        max_request: int = 10_000,
        max_buffer: int = 200_000,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self._post = post
        self.interval = interval
        self.batch_size = batch_size
        self.max_request = max_request
        self.max_buffer = max_buffer
        self.retries = retries
        self.backoff = backoff
        self._buffer: list[Point] = []
        self._lock = threading.Lock()  # guards _buffer
        self._send_lock = threading.Lock()  # one sender at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_send = (
            0.0  # monotonic time of the last post: the first point of a quiet spell goes at once
        )
        self.requests = 0  # HTTP requests made (for tests and diagnostics)
        self.dropped = 0

    def add(self, point: Point) -> None:
        with self._lock:
            self._buffer.append(point)
            size = len(self._buffer)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="aicloud-metrics", daemon=True)
                self._thread.start()
        if size >= self.batch_size or time.monotonic() - self._last_send >= self.interval:
            self._wake.set()  # a full batch, or the first point after a quiet spell: no waiting

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception as exc:  # the sender thread never dies
                _warn(f"could not send metrics: {exc}")

    def send_soon(self) -> None:
        """Have the sender thread post what is buffered now, without waiting for it (end of an epoch:
        a sweep's pruner reads the epoch's metric at once)."""
        self._wake.set()

    def flush(self, retries: int | None = None) -> None:
        """Send everything buffered now; on failure the points go back to the buffer (bounded)."""
        with self._send_lock:
            self._last_send = time.monotonic()
            with self._lock:
                points, self._buffer = self._buffer, []
            for start in range(0, len(points), self.max_request):
                chunk = points[start : start + self.max_request]
                if not self._send(chunk, self.retries if retries is None else retries):
                    self._requeue(points[start:])
                    return

    def _send(self, chunk: list[Point], retries: int) -> bool:
        delay = self.backoff
        for attempt in range(retries + 1):
            try:
                self.requests += 1
                self._post(chunk)
                return True
            except Exception as exc:
                if not _retryable(exc):
                    self.dropped += len(chunk)
                    _warn(f"the server refused {len(chunk)} metric points: {exc}")
                    return True  # sending them again would fail the same way
                if attempt == retries:
                    _warn(f"could not send {len(chunk)} metric points ({exc}); will retry")
                    return False
                time.sleep(delay)
                delay *= 2
        return False

    def _requeue(self, points: list[Point]) -> None:
        with self._lock:
            self._buffer = points + self._buffer
            excess = len(self._buffer) - self.max_buffer
            if excess > 0:
                del self._buffer[:excess]
                self.dropped += excess
                _warn(f"dropped the {excess} oldest metric points: the buffer is full")

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and send what is left (one quick try)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush(retries=1)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)


class LocalSink:
    """Offline metrics: one JSON line per point in a file, and a line on stdout."""

    def __init__(self, path: Path, echo: TextIO | None = None) -> None:
        self.path = path
        self.echo = echo
        self._lock = threading.Lock()
        self._file: TextIO | None = None

    def add(self, point: Point) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open, closed in close()
            self._file.write(json.dumps(point) + "\n")
        out = self.echo if self.echo is not None else sys.stdout
        print(f"[aicloud] {point['name']}={point['value']:.6g} (step {point['step']})", file=out, flush=False)

    def send_soon(self) -> None:
        pass  # written as logged

    def flush(self, retries: int | None = None) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
        (self.echo or sys.stdout).flush()

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def pending(self) -> int:
        return 0


# -----------------------------------------------------------------------------------------------------
# system metrics


def process_tree_usage(root: int) -> tuple[float, int]:
    """(cpu seconds, rss bytes) summed over ``root`` and its descendants; (0, 0) when it is gone."""
    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0
    cpu, rss = 0.0, 0
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
        except psutil.Error:  # ended between the listing and the read
            continue
    return cpu, rss


class SystemSampler:
    """Logs ``system/cpu_percent`` (100 = one core busy) and ``system/rss_mb`` every ``interval`` s.

    ``pid`` is the root of the process tree to measure (default: this process).
    """

    def __init__(
        self, log: Callable[[str, float], None], pid: int | None = None, interval: float = 5.0
    ) -> None:
        self.log = log
        self.pid = pid or os.getpid()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aicloud-system-metrics", daemon=True)

    def usage(self) -> tuple[float, int]:
        return process_tree_usage(self.pid)

    def start(self) -> SystemSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        last_cpu, last_t = self.usage()[0], time.monotonic()
        try:  # one sample at once, so a run shows a live metric before the work gets going
            self.log("system/rss_mb", self.usage()[1] / 1e6)
        except Exception as exc:
            _warn(f"system metrics: {exc}")
        while not self._stop.wait(self.interval):
            try:
                cpu, rss = self.usage()
                now = time.monotonic()
                self.log("system/cpu_percent", 100.0 * max(0.0, cpu - last_cpu) / max(now - last_t, 1e-6))
                self.log("system/rss_mb", rss / 1e6)
                last_cpu, last_t = cpu, now
            except Exception as exc:  # never kill the job over a metric
                _warn(f"system metrics: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
