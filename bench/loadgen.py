"""The closed-loop HTTP load generator and the in-process ceiling runner of bench/serving.py.

:func:`run_load`: C connections (asyncio streams, HTTP/1.1 keep-alive, uvloop when installed) each
send the next request as soon as the previous answer arrived, for ``duration`` seconds after a
``WARMUP_S`` warm-up (or ``warmup``); every answer that arrives between the end of the warm-up and
the stop counts, wherever its request started (counting only requests that both started and ended
inside the window would drop about one latency's worth of answers: 1.4% of an 8 s row at 110 ms).
The same generator drives every system (aicloud's gateway and replica, and the peers).

:func:`run_ceiling`: one batched call back to back, no HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

WARMUP_S = 1.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        end = lower.index(b"\r\n", i + 2)
        return status, await reader.readexactly(int(lower[i + 17 : end]))
    if b"\r\ntransfer-encoding: chunked" in lower:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return status, b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])
    raise ConnectionError(f"response without length: {head[:200]!r}")


def _request_bytes(url: str, token: str, body: Any) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    payload = json.dumps(body, separators=(",", ":")).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return u.hostname or "127.0.0.1", u.port or 80, head + payload


def counted(t1: float, warm_until: float, stop_at: float) -> bool:
    """Whether an answer that arrived at ``t1`` counts in the window ``[warm_until, stop_at]``."""
    return warm_until <= t1 <= stop_at


async def _load(
    url: str, token: str, body: Any, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    host, port, request = _request_bytes(url, token, body)
    t_start = time.perf_counter()
    warm_until, stop_at = t_start + warmup, t_start + warmup + duration
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(request)
                status, _ = await _read_response(reader)
                t1 = time.perf_counter()
                if counted(t1, warm_until, stop_at):
                    if status == 200:
                        latencies.append(t1 - t0)
                    else:
                        errors[str(status)] = errors.get(str(status), 0) + 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(latencies, duration, rows_per_call=1, errors=errors)


def run_load(
    url: str, token: str, body: Any, concurrency: int, duration: float, warmup: float = WARMUP_S
) -> dict[str, Any]:
    """Closed-loop load on ``url`` (POST ``body`` as JSON; ``token``: bearer, or "" for none)."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_load(url, token, body, concurrency, duration, warmup))


def _summary(
    latencies: list[float], duration: float, rows_per_call: int, errors: dict[str, int] | None = None
) -> dict[str, Any]:
    lat = np.asarray(latencies) * 1000
    return {
        "req_s": round(len(lat) * rows_per_call / duration, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "calls": len(lat),
        "errors": errors or {},
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews the row
    }


def run_ceiling(
    fn: Callable[[], Any], batch: int, duration: float, parallel: int = 1, warmup: float = WARMUP_S
) -> dict[str, Any]:
    """``fn`` (one batched call on ``batch`` rows) back to back, in ``parallel`` threads at once
    (torch releases the GIL in its kernels); req/s counts rows, latency is per call."""
    t_end = time.perf_counter() + warmup
    while time.perf_counter() < t_end:
        fn()
    latencies: list[float] = []
    start = time.perf_counter()
    stop_at = start + duration

    def loop() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            fn()
            latencies.append(time.perf_counter() - t0)  # list.append is atomic under the GIL

    threads = [threading.Thread(target=loop) for _ in range(parallel - 1)]
    for t in threads:
        t.start()
    loop()
    for t in threads:
        t.join()
    return _summary(latencies, time.perf_counter() - start, rows_per_call=batch)
