"""Dataset benchmark: encrypted upload/download throughput against a plain file copy, and
GET latency of a dataset version at a fixed request rate.

    python bench/datasets.py [--size-mb 500] [--rate 200] [--seconds 10]

Prints a table and writes bench/results/datasets.json. Starts its own control plane
(SQLite, local encrypted blobs) in a temporary AICLOUD_HOME on the same disk as the copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from aicloud import Client
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"


def make_csv(path: Path, size_mb: int) -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((20_000, 8)) * 1000
    block = ("\n".join(",".join(f"{v:.4f}" for v in r) for r in rows) + "\n").encode()
    with open(path, "wb") as f:
        f.write(b",".join(f"f{i}".encode() for i in range(8)) + b"\n")
        while f.tell() < size_mb * 1024 * 1024:
            f.write(block)


def timed_copy(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())
    return time.perf_counter() - start


async def fixed_rate_gets(url: str, token: str, path: str, rate: float, seconds: float) -> list[float]:
    """Open-loop load: one request every 1/rate s, whatever the latency; returns latencies in ms."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits
    ) as c:

        async def one() -> None:
            t0 = time.perf_counter()
            r = await c.get(path)
            r.raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)

        for _ in range(20):  # warm the connection pool
            await one()
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        src = work / "data.csv"
        console.print(f"writing a {args.size_mb} MB CSV …")
        make_csv(src, args.size_mb)
        size = src.stat().st_size
        mb = size / 1e6
        copies = [timed_copy(src, work / f"copy{i}.csv") for i in range(3)]
        for i in range(3):
            (work / f"copy{i}.csv").unlink()
        copy_s = statistics.median(copies)
        with ServerProcess(work / "home") as srv, Client(url=srv.url, token=srv.token) as c:
            t0 = time.perf_counter()
            with open(src, "rb") as f:
                r = httpx.post(
                    f"{srv.url}/api/v1/datasets/bench/versions",
                    files={"file": ("data.csv", f)},
                    headers={"Authorization": f"Bearer {srv.token}"},
                    timeout=None,
                )
            upload_s = time.perf_counter() - t0
            r.raise_for_status()
            timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
            store_s, profile_s = float(timing["store"]) / 1000, float(timing["profile"]) / 1000
            ds = c.datasets.get("bench", 1)
            t0 = time.perf_counter()
            ds.download(work / "back.csv")
            download_s = time.perf_counter() - t0
            assert (work / "back.csv").stat().st_size == size
            (work / "back.csv").unlink()
            console.print(
                f"GET /datasets/bench/versions/1 at {args.rate:.0f} req/s for {args.seconds:.0f} s …"
            )
            lat = asyncio.run(
                fixed_rate_gets(
                    srv.url, srv.token, "/api/v1/datasets/bench/versions/1", args.rate, args.seconds
                )
            )
    copy_mbs, up_mbs, down_mbs = mb / copy_s, mb / upload_s, mb / download_s
    store_mbs = mb / store_s
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "size_mb": round(mb, 1),
        "plain_copy_mb_s": round(copy_mbs, 1),
        "upload_store_mb_s": round(store_mbs, 1),
        "upload_store_ratio_to_copy": round(store_mbs / copy_mbs, 3),
        "upload_profile_s": round(profile_s, 2),
        "upload_mb_s": round(up_mbs, 1),
        "upload_ratio_to_copy": round(up_mbs / copy_mbs, 3),
        "download_mb_s": round(down_mbs, 1),
        "download_ratio_to_copy": round(down_mbs / copy_mbs, 3),
        "get_rate_rps": args.rate,
        "get_requests": len(lat),
        "get_p50_ms": round(pct(lat, 50), 2),
        "get_p99_ms": round(pct(lat, 99), 2),
        "targets": {"ratio_to_copy": ">= 0.5", "get_p99_ms": "< 20"},
    }
    table = Table(title=f"datasets benchmark ({mb:.0f} MB CSV, encryption on)")
    for col in ("measure", "value", "vs plain copy", "target"):
        table.add_column(col)
    table.add_row("plain file copy (+fsync)", f"{copy_mbs:.0f} MB/s", "1.00", "")
    table.add_row(
        "upload: stored (multipart+hash+encrypt+fsync)",
        f"{store_mbs:.0f} MB/s",
        f"{store_mbs / copy_mbs:.2f}",
        "≥ 0.5",
    )
    table.add_row(
        "upload: ready (+ schema and stats)",
        f"{up_mbs:.0f} MB/s",
        f"{up_mbs / copy_mbs:.2f}",
        f"profile {profile_s:.1f} s",
    )
    table.add_row("download (decrypt+stream)", f"{down_mbs:.0f} MB/s", f"{down_mbs / copy_mbs:.2f}", "≥ 0.5")
    table.add_row(f"GET version p50 @ {args.rate:.0f}/s", f"{result['get_p50_ms']} ms", "", "")
    table.add_row(f"GET version p99 @ {args.rate:.0f}/s", f"{result['get_p99_ms']} ms", "", "< 20 ms")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "datasets.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS / 'datasets.json'}")


if __name__ == "__main__":
    main()
