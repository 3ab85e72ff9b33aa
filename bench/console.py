"""Console data benchmark: the server time of the runs page, a run page and the compare view over
a store of 10,000 runs x 100 metrics x 1,000 steps (a billion points).

    python bench/console.py [--scale 1.0] [--pg] [--reps 30] [--workdir DIR] [--keep] [--url URL]

Fills a fresh store through its own bulk path (``RunStore.log_metric_arrays``, one transaction
per run; no HTTP), then times, in-process, what the routes run for each view: the service call
(``server.services.runs``) and the JSON encoding of its response model; HTTP, auth and the
network are left out. On PostgreSQL the tables are analyzed after the fill (as autovacuum would
soon). Each view is timed ``--reps`` times (at least 30) on random runs and pages;
the target is p95 < 300 ms. ``--scale 0.1`` fills a tenth of the runs (still 100 metrics x 1,000
steps each). SQLite by default (a file in ``--workdir``); ``--pg`` uses a new database on the
PostgreSQL server at ``AICLOUD_BENCH_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), dropped afterwards unless ``--keep``.

``--keep`` keeps the filled database and prints its URL; ``--url URL`` measures a store kept so
(its workspace ``bench``) without filling again.

Prints a table and writes bench/results/console-<sqlite|postgresql>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from aicloud.entities import RunStatus
from aicloud.entities.series import MetricArrays
from aicloud.server.services import runs as run_views
from aicloud.server.services.run_filters import Columns
from aicloud.store import MetadataStore, open_store

RESULTS = Path(__file__).parent / "results"
PG_SERVER = os.environ.get("AICLOUD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_P95_MS = 300.0
METRICS = ["val_loss", "train_loss", "val_acc", "train_acc", "lr"]
OPTIMIZERS = ["adam", "sgd", "adamw", "rmsprop"]


def metric_names(n: int) -> list[str]:
    return (METRICS + [f"layer{i:02d}/grad_norm" for i in range(n)])[:n]


def fill(store: MetadataStore, ws: str, runs: int, n_metrics: int, steps: int, console: Console) -> list[str]:
    """``runs`` runs of ``n_metrics`` series of ``steps`` points each; returns their ids."""
    rng = np.random.default_rng(0)
    names = metric_names(n_metrics)
    x = np.arange(steps, dtype=np.int64)
    ids: list[str] = []
    start = last_report = time.perf_counter()
    for i in range(runs):
        params = {
            "lr": float(rng.choice([0.1, 0.03, 0.01, 0.003, 0.001])),
            "optimizer": str(rng.choice(OPTIMIZERS)),
            "batch_size": int(rng.choice([32, 64, 128, 256])),
            "dropout": round(float(rng.random()) * 0.5, 3),
            "seed": i,
        }
        run = store.runs.create(workspace_id=ws, job_id=None, name=f"trial-{i:05d}", params=params)
        # Curves that decay from a run-specific start towards a floor, with noise.
        scale = rng.uniform(0.2, 3.0, size=(n_metrics, 1))
        floor = rng.uniform(0.01, 0.6, size=(n_metrics, 1))
        tau = rng.uniform(steps / 20, steps / 2, size=(n_metrics, 1))
        values = floor + scale * np.exp(-x / tau) + rng.normal(0, 0.01, size=(n_metrics, steps))
        timestamps = 1.7e9 + i * 600.0 + x * 0.5
        series = {name: MetricArrays(x, values[k], timestamps) for k, name in enumerate(names)}
        store.runs.log_metric_arrays(ws, run.id, series)
        if i % 10:
            store.runs.finish(ws, run.id, RunStatus.SUCCEEDED if i % 7 else RunStatus.FAILED)
        ids.append(run.id)
        now = time.perf_counter()
        if now - last_report > 30 or i == runs - 1:
            rate = (i + 1) / (now - start)
            console.print(
                f"  {i + 1:>6}/{runs} runs, {(i + 1) * n_metrics * steps / 1e6:,.0f}M points, "
                f"{rate:.1f} runs/s, about {(runs - i - 1) / rate / 60:.1f} min left"
            )
            last_report = now
    return ids


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    fn()  # warm up (imports, statement caches)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def views(store: MetadataStore, ws: str, ids: list[str], n_metrics: int) -> dict[str, Callable[[], Any]]:
    """Each measured view: what its route runs (the service call and the JSON encoding of its
    body, ``run_views.*_json``, as the route calls them)."""
    rnd = random.Random(1)
    names = metric_names(n_metrics)
    picked = Columns(params=("lr", "optimizer"), metrics=tuple(names[:4] + names[-1:]))
    pages = max(1, min(20, len(ids) // 50))

    def runs_page(filter: str | None) -> Callable[[], Any]:
        def view() -> bytes:
            where = run_views.run_filter(
                filter=filter, sort="metrics.val_loss", offset=50 * rnd.randrange(pages)
            )
            table = run_views.run_table(store.runs, ws, where=where, limit=50, columns=picked)
            return run_views.runs_json(table.runs)

        return view

    def run_page(max_points: int, limit: int | None) -> Callable[[], Any]:
        def view() -> bytes:
            page = run_views.run_metrics(store.runs, ws, rnd.choice(ids), max_points=max_points, limit=limit)
            return run_views.metrics_json(page, paged=limit is not None)

        return view

    def compare() -> bytes:
        chosen = rnd.sample(ids, min(10, len(ids)))
        view = run_views.compare(store.runs, ws, chosen, metrics=names[:5], max_points=2000)
        return run_views.compare_json(view)

    return {
        "runs page: 50 of all, 5 metric + 2 param columns, by val_loss": runs_page(None),
        "runs page: same, filtered (val_loss < 0.5, optimizer = adam)": runs_page(
            "metrics.val_loss < 0.5 and params.optimizer = 'adam'"
        ),
        f"run page: all {n_metrics} metrics, ≤ 2,000 points each": run_page(2000, None),
        f"run page: all {n_metrics} metrics, ≤ 200 points each (LTTB at work)": run_page(200, None),
        "run page: first 20 metrics, ≤ 2,000 points each": run_page(2000, 20),
        "compare: 10 runs x 5 metrics, ≤ 2,000 points each": compare,
    }


def _admin(sql: str) -> None:
    engine = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text(sql))
    finally:
        engine.dispose()


def database_bytes(store: MetadataStore, url: str) -> int:
    if url.startswith("sqlite"):
        path = Path(str(make_url(url).database))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with store.database.engine.connect() as connection:  # type: ignore[attr-defined]
        return int(connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 10,000 runs to fill")
    ap.add_argument("--metrics", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the filled database")
    ap.add_argument("--url", default=None, help="measure this store, filled before with --keep")
    args = ap.parse_args()
    reps = max(30, args.reps)
    runs = max(20, round(10_000 * args.scale))
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="aicloud-bench-console-", dir=args.workdir))
    pg_name = f"aicloud_bench_console_{secrets.token_hex(4)}"
    reuse = args.url is not None
    if reuse:
        url = args.url
        args.pg = url.startswith("postgresql")
    elif args.pg:
        _admin(f'CREATE DATABASE "{pg_name}"')
        url = make_url(PG_SERVER).set(database=pg_name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp / 'console.db'}"
    db = "postgresql" if args.pg else "sqlite"
    keep = args.keep or reuse
    try:
        store = open_store(url)
        try:
            if reuse:
                workspace = store.workspaces.get_by_name("bench")
                assert workspace is not None, f"{url} has no workspace 'bench': fill it with --keep first"
                ws = workspace.id
                ids = [r.id for r in store.runs.list(ws, limit=1_000_000, metrics=[])]
                stats = store.runs.metric_stats(ws, ids[0])
                runs, args.metrics, args.steps = len(ids), len(stats), stats[0].count
                fill_s = float("nan")
            else:
                ws = store.workspaces.create("bench").id
                console.print(
                    f"filling {db}: {runs:,} runs x {args.metrics} metrics x {args.steps:,} steps …"
                )
                t0 = time.perf_counter()
                ids = fill(store, ws, runs, args.metrics, args.steps, console)
                fill_s = time.perf_counter() - t0
            points = runs * args.metrics * args.steps
            if args.pg:
                # What autovacuum does after a bulk load, at once: the planner's statistics.
                with store.database.engine.begin() as connection:  # type: ignore[attr-defined]
                    connection.execute(text("ANALYZE runs, run_metrics, metric_chunks"))
            size = database_bytes(store, url)
            console.print(
                f"filled in {fill_s / 60:.1f} min, {size / 1e9:.2f} GB ({size / points:.1f} bytes/point)"
            )
            measured = {}
            for label, fn in views(store, ws, ids, args.metrics).items():
                ms = timed(fn, reps)
                measured[label] = {
                    "p50_ms": round(float(np.percentile(ms, 50)), 1),
                    "p95_ms": round(float(np.percentile(ms, 95)), 1),
                    "reps": reps,
                }
                console.print(
                    f"  {label}: p50 {measured[label]['p50_ms']} ms, p95 {measured[label]['p95_ms']} ms"
                )
        finally:
            store.close()
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
            if args.pg:
                _admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        else:
            console.print(f"kept the database at {make_url(url).render_as_string(hide_password=True)}")
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "database": db,
        "scale": args.scale,
        "runs": runs,
        "metrics_per_run": args.metrics,
        "steps_per_metric": args.steps,
        "points": points,
        "fill_s": None if reuse else round(fill_s, 1),
        "fill_points_per_s": None if reuse else round(points / fill_s),
        "database_bytes": size,
        "bytes_per_point": round(size / points, 2),
        "views": measured,
        "targets": {"p95_ms": f"< {TARGET_P95_MS:.0f}"},
        "timed": "in-process: the service call and the JSON encoding of the response (no HTTP, no auth)",
    }
    table = Table(
        title=f"console data benchmark ({db}: {runs:,} runs x {args.metrics} metrics x {args.steps:,} steps, "
        f"{points / 1e9:.2f}B points, {size / 1e9:.1f} GB"
        + ("" if reuse else f", filled in {fill_s / 60:.1f} min")
        + ")"
    )
    for col in ("view (server time, in-process)", "p50", "p95", "target"):
        table.add_column(col)
    for label, m in measured.items():
        ok = "✓" if m["p95_ms"] < TARGET_P95_MS else "✗"
        table.add_row(label, f"{m['p50_ms']} ms", f"{m['p95_ms']} ms", f"< {TARGET_P95_MS:.0f} ms {ok}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"console-{db}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
