"""Batch prediction (docs/evaluation.md): memory follows the chunk, not the dataset.

    python bench/batch_predict.py [--rows 100000 400000] [--chunks 1000 10000 100000]

Starts a control plane (SQLite, local blobs) in a temporary home, trains the built-in tabular
classifier on iris, uploads generated datasets of ``--rows`` rows (iris-like features plus a row id,
CSV) and runs one ``batch_predict`` job per (rows, chunk_rows). Reports each job's peak RSS (the
executor's ``usage.peak_rss_bytes``), wall time and rows per second, and the RSS of a baseline job
(the same model on 150 rows): the growth with the row count at a fixed chunk is the memory that is
not bounded. Prints a table and writes bench/results/batch_predict.json. No targets are asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402

from aicloud import Client  # noqa: E402
from aicloud.testing.server import ServerProcess  # noqa: E402


def _iris() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    return frame


def _generated(base: pd.DataFrame, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(rows)
    big = base.sample(n=rows, replace=True, random_state=1).reset_index(drop=True)
    big = big + rng.normal(0, 0.05, big.shape).round(3)
    big.insert(0, "row_id", np.arange(rows))
    return big


def _run(client: Client, ref: str, dataset: str, chunk: int) -> dict[str, float]:
    started = time.perf_counter()
    job = client.models.batch_predict(ref, dataset, chunk_rows=chunk, wait=False)
    job.wait(timeout=1800)
    wall = time.perf_counter() - started
    if job.status != "succeeded":
        raise SystemExit(f"job {job.id} {job.status}:\n{job.logs()[-3000:]}")
    usage = job.info.usage
    return {"peak_rss_mb": int(usage.get("peak_rss_bytes") or 0) / 1e6, "wall_s": wall,
            "job_wall_s": float(usage.get("wall_seconds") or 0)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--chunks", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-bp-") as home:
        proc = ServerProcess(Path(home)).start()
        try:
            with Client(url=proc.url, token=proc.token) as client:
                iris = _iris()
                path = Path(home) / "iris.csv"
                iris.to_csv(path, index=False)
                ds = client.datasets.create("iris", path)
                job = client.jobs.train(
                    task="tabular-classification", dataset=ds, eval_dataset=ds, target="species",
                    params={"epochs": 20}, model_name="iris-mlp",
                )  # fmt: skip
                job.wait(timeout=600)
                ref = "iris-mlp:1"
                base = _run(client, ref, ds.ref, 10_000)
                results.append({"rows": 150, "chunk_rows": 10_000, **base})
                for rows in args.rows:
                    data = Path(home) / f"gen-{rows}.csv"
                    _generated(iris.drop(columns=["species"]), rows).to_csv(data, index=False)
                    gen = client.datasets.create(f"gen-{rows}", data)
                    data.unlink()
                    for chunk in args.chunks:
                        out = _run(client, ref, gen.ref, chunk)
                        out["rows_per_s"] = rows / out["job_wall_s"] if out["job_wall_s"] else 0.0
                        results.append({"rows": rows, "chunk_rows": chunk, **out})
                        print(f"rows={rows:>8} chunk={chunk:>7} peak_rss={out['peak_rss_mb']:7.1f} MB "
                              f"job_wall={out['job_wall_s']:6.1f} s", flush=True)  # fmt: skip
        finally:
            proc.stop()
    print(f"\n{'rows':>8} {'chunk_rows':>10} {'peak RSS MB':>12} {'job wall s':>11} {'rows/s':>9}")
    for r in results:
        print(f"{r['rows']:>8} {r['chunk_rows']:>10} {r['peak_rss_mb']:>12.1f} {r['job_wall_s']:>11.1f} "
              f"{r.get('rows_per_s', 0):>9.0f}")  # fmt: skip
    out_path = ROOT / "bench" / "results" / "batch_predict.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
    }
    out_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
