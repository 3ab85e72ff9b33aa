"""Chat generation through the gateway: time to first token and tokens/s for the zoo's tiny LM
(issue #22, item 3; docs/openai.md, "Measured").

    python bench/chat.py [--concurrency 1,16] [--requests 32] [--max-tokens 48]

Starts its own control plane (SQLite) in a temporary AICLOUD_HOME, registers the zoo LM's shipped
files (``aicloud/zoo/data/tiny_lm``, as ``aicloud zoo pull tiny-lm`` does) and deploys them with one
replica. At each concurrency it keeps that many streaming ``POST /v1/endpoints/<name>/v1/completions``
in flight (``stream: true``, ``stream_options.include_usage``, temperature 0.8 with a seed per
request, prompts taken in turn from the corpus's first words) until ``--requests`` have finished, and
reports: time to first token (from sending the request to the first chunk with text; p50 and p95),
tokens/s per stream (its completion tokens after the first, over the time from its first to its
last chunk), and the aggregate tokens/s (every stream's completion tokens over the wall time). The
replica's own TTFT histogram (``aicloud_generation_time_to_first_token_seconds``) is read back too.
Prints a table and writes bench/results/chat.json. No targets are asserted: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from aicloud import Client
from aicloud.serving.tiny_lm import DATA
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
PROMPTS = [
    "The little cloud",
    "A fox and a hen",
    "The river",
    "Once a traveller",
    "The old baker",
    "Rain fell",
]


def register(c: Client, folder: Path, name: str) -> str:
    files = {p.name: c.blobs.upload(p.read_bytes()) for p in sorted(folder.iterdir())}
    config = json.loads((folder / "config.json").read_text())
    out = c.models.register_version(name, files, signature={}, config=config, metrics={})
    return f"{name}:{out['version']}"


async def one(http: httpx.AsyncClient, url: str, i: int, max_tokens: int) -> dict[str, float]:
    body = {
        "model": "tiny",
        "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with http.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            doc = json.loads(line[6:])
            now = time.perf_counter()
            if doc["choices"] and doc["choices"][0]["text"]:
                first = first or now
                last = now
            if doc.get("usage"):
                tokens = doc["usage"]["completion_tokens"]
    span = last - first
    return {
        "ttft": first - sent,
        "tokens": tokens,
        "tps": (tokens - 1) / span if span > 0 and tokens > 1 else 0.0,
    }


async def level(url: str, token: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, Any]:
    results: list[dict[str, float]] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=120, limits=limits
    ) as http:

        async def worker() -> None:
            for i in counter:
                results.append(await one(http, url, i, max_tokens))

        await one(http, url, 10_000, 4)  # warm: the first call pays the connection and the channel
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttft = sorted(r["ttft"] for r in results)
    total = sum(r["tokens"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 1),
        "ttft_p95_ms": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))] * 1000, 1),
        "stream_tokens_per_s_median": round(statistics.median(r["tps"] for r in results), 1),
        "aggregate_tokens_per_s": round(total / wall, 1),
        "completion_tokens": total,
        "wall_s": round(wall, 2),
    }


def replica_ttft(server: ServerProcess, name: str) -> dict[str, float]:
    text = httpx.get(
        f"{server.url}/v1/endpoints/{name}/metrics",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    ).text
    out = {}
    for key in ("sum", "count"):
        m = re.search(rf"^aicloud_generation_time_to_first_token_seconds_{key} ([0-9.e+-]+)$", text, re.M)
        out[key] = float(m.group(1)) if m else 0.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as home:
        server = ServerProcess(Path(home)).start()
        try:
            with Client(url=server.url, token=server.token) as c:
                ref = register(c, DATA, "tiny-lm")
                dep = c.deployments.create("chat", model=ref, min_replicas=1, max_replicas=1)
                dep.wait_ready(timeout=300)
            url = f"{server.url}/v1/endpoints/chat/v1/completions"
            for conc in levels:
                before = replica_ttft(server, "chat")
                row = asyncio.run(level(url, server.token, conc, args.requests, args.max_tokens))
                after = replica_ttft(server, "chat")
                n = after["count"] - before["count"]
                row["replica_ttft_mean_ms"] = (
                    round((after["sum"] - before["sum"]) / n * 1000, 1) if n else None
                )
                rows.append(row)
        finally:
            server.stop()
    table = Table(title=f"tiny LM through the gateway (streaming, max_tokens {args.max_tokens})")
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=200).print(table)
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "bench": "chat",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "model": "zoo/tiny-lm (3 layers, 128 dims, context 256)",
        "args": vars(args),
        "rows": rows,
    }
    (RESULTS / "chat.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
