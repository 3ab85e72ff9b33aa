"""Semantic search: where exact numpy brute force stops being the right index (issue #22, item 6;
docs/zoo.md, "Semantic search").

    python bench/semantic_search.py [--sizes 1000,5000,10000,20000,50000,100000] [--queries 200]

For each size N it makes N clustered unit vectors of 384 dimensions (MiniLM's; 200 centres plus
noise, so neighbours are meaningful, seed 0) and 1 query per ``--queries`` drawn the same way, and
times one query at a time (what ``search(query, k=10)`` does), single-threaded as the search worker
runs:

* numpy: ``vectors @ q`` and an argpartition (exact; what aicloud.zoo.search.top_k does);
* faiss flat (IndexFlatIP, exact, BLAS);
* faiss HNSW (M=32, efConstruction 80, efSearch 128; aicloud.zoo.search's settings): its build time
  and recall@10 against the exact answer.

Prints a table and writes bench/results/semantic_search.json. The crossover the index uses
(aicloud.zoo.search.BRUTE_FORCE_MAX_ROWS) is read from this table; no target is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from aicloud.zoo.search import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, top_k

DIM = 384
K = 10
OUT = Path(__file__).parent / "results" / "semantic_search.json"


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    x = centres[picks] + rng.normal(0, 0.6 / np.sqrt(DIM), (n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(fn, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    times, answers = [], []
    for q in queries:
        t = time.perf_counter()
        answers.append(fn(q))
        times.append(time.perf_counter() - t)
    return times, answers


def ms(times: list[float], q: float) -> float:
    return 1000 * float(np.quantile(times, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000,20000,50000,100000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (200, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        vectors = clustered(n, rng, centres)
        queries = clustered(args.queries, rng, centres)
        t_np, exact = timed(lambda q, v=vectors: top_k(v, q, K)[0], queries)
        flat = faiss.IndexFlatIP(DIM)
        flat.add(vectors)
        t_flat, _ = timed(lambda q, f=flat: f.search(q.reshape(1, -1), K)[1][0], queries)
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.add(vectors)
        build_s = time.perf_counter() - t0
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        t_hnsw, approx = timed(lambda q, h=hnsw: h.search(q.reshape(1, -1), K)[1][0], queries)
        recall = statistics.mean(
            len(set(a.tolist()) & set(e.tolist())) / K for a, e in zip(approx, exact, strict=True)
        )
        row = {
            "rows": n,
            "numpy_p50_ms": round(ms(t_np, 0.5), 3),
            "numpy_p99_ms": round(ms(t_np, 0.99), 3),
            "faiss_flat_p50_ms": round(ms(t_flat, 0.5), 3),
            "hnsw_p50_ms": round(ms(t_hnsw, 0.5), 3),
            "hnsw_p99_ms": round(ms(t_hnsw, 0.99), 3),
            "hnsw_build_s": round(build_s, 2),
            "hnsw_recall_at_10": round(recall, 4),
            "matrix_mb": round(vectors.nbytes / 1e6, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    columns = [
        ("rows", "rows", 8),
        ("numpy p50", "numpy_p50_ms", 10),
        ("numpy p99", "numpy_p99_ms", 10),
        ("flat p50", "faiss_flat_p50_ms", 9),
        ("hnsw p50", "hnsw_p50_ms", 9),
        ("hnsw p99", "hnsw_p99_ms", 9),
        ("build s", "hnsw_build_s", 8),
        ("recall@10", "hnsw_recall_at_10", 9),
        ("MB", "matrix_mb", 7),
    ]
    print("times in ms per query, one thread")
    print(" ".join(f"{title:>{width}}" for title, _, width in columns))
    for r in rows:
        print(" ".join(f"{r[key]:>{width}}" for _, key, width in columns))
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "faiss": faiss.__version__,
                },
                "dimensions": DIM,
                "k": K,
                "queries": args.queries,
                "threads": 1,
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
