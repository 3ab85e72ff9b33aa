"""Drift reports (docs/monitoring.md): the time of one report as the row count grows.

    python bench/drift.py [--rows 1000 10000 50000 200000] [--columns 20]

Generates two CSV files of ``--rows`` rows (three quarters numeric columns, a quarter text columns
of ten categories; the current file's first half of the columns shifted), and times
:func:`aicloud.data.drift.sample_table` on both plus :func:`~aicloud.data.drift.drift_report`
in-process, then the whole report through a parser worker (:class:`aicloud.data.ParserPool`, the
server's path: the two files sent through its pipe, sampled and tested there). Prints a table and
writes bench/results/drift.json. The target: a report over 50k rows in under 1 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from aicloud.data import ParseLimits, ParserPool  # noqa: E402
from aicloud.data.drift import drift_report, sample_table  # noqa: E402


def _csv(rows: int, columns: int, shift: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    n_num = columns * 3 // 4
    cols: dict[str, list[str]] = {}
    for i in range(n_num):
        moved = shift if i < n_num // 2 else 0.0
        cols[f"x{i}"] = [f"{v:.5g}" for v in rng.normal(moved, 1.0, rows)]
    for i in range(columns - n_num):
        p = np.linspace(1, 2 + shift * 4 * (i % 2), 10)
        cols[f"c{i}"] = rng.choice([f"cat{k}" for k in range(10)], rows, p=p / p.sum()).tolist()
    header = ",".join(cols)
    lines = (",".join(vals) for vals in zip(*cols.values(), strict=True))
    return (header + "\n" + "\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 50000, 200000])
    parser.add_argument("--columns", type=int, default=20)
    args = parser.parse_args()
    pool = ParserPool(ParseLimits())
    pool.start()
    results = []
    try:
        warm = _csv(200, args.columns, 0.0, 0)  # imports (scipy) and the worker's start, untimed
        w = sample_table("csv", io.BytesIO(warm))
        drift_report(w[0], w[0])
        with pool.session() as session:
            session.drift(
                {"ref_fmt": "csv", "ref_size": len(warm), "fmt": "csv"}, io.BytesIO(warm * 2), 2 * len(warm)
            )
        for rows in args.rows:
            ref, cur = _csv(rows, args.columns, 0.0, 1), _csv(rows, args.columns, 0.5, 2)
            t0 = time.perf_counter()
            a, b = sample_table("csv", io.BytesIO(ref)), sample_table("csv", io.BytesIO(cur))
            report = drift_report(a[0], b[0], unsupported=(a[1], b[1]), rows=(a[2], b[2]))
            in_process = time.perf_counter() - t0
            job = {"ref_fmt": "csv", "ref_size": len(ref), "fmt": "csv", "threshold": 0.5}
            t0 = time.perf_counter()
            with pool.session() as session:
                worker_report = session.drift(job, io.BytesIO(ref + cur), len(ref) + len(cur))
            in_worker = time.perf_counter() - t0
            assert worker_report["drift_score"] == report["drift_score"]
            results.append(
                {
                    "rows": rows,
                    "columns": args.columns,
                    "mb": round((len(ref) + len(cur)) / 1e6, 2),
                    "tests": sorted({c["test"] for c in report["columns"]}),
                    "drift_score": report["drift_score"],
                    "in_process_s": round(in_process, 3),
                    "worker_s": round(in_worker, 3),
                }
            )
    finally:
        pool.close()
    print(f"{'rows':>8} {'cols':>5} {'MB':>6} {'score':>6} {'in-proc s':>10} {'worker s':>9}  tests")
    for r in results:
        print(
            f"{r['rows']:>8} {r['columns']:>5} {r['mb']:>6} {r['drift_score']:>6} {r['in_process_s']:>10} "
            f"{r['worker_s']:>9}  {', '.join(r['tests'])}"
        )
    out = ROOT / "bench" / "results" / "drift.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
