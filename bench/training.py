"""Training benchmark: the same 5-epoch digits CNN bare in a Python process and as an aicloud
job; submit-to-first-metric latency; metric history of a 100k-point run through the API.

    python bench/training.py [--epochs 5] [--repeats 3]

Prints a table and writes bench/results/training.json. Starts its own control plane
(SQLite) in a temporary AICLOUD_HOME. Throughput excludes process start and imports: it is
the time the training loop itself reports per epoch (``epoch_seconds``), bare and in the job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"

BARE = r"""
import json, sys, time
from aicloud.schemas.training import TrainSpec
from aicloud.training.tasks import run_task

class Collect:
    def __init__(self): self.points = []
    def log_metric(self, name, value, step=None): self.points.append((name, step, float(value)))

spec = TrainSpec.model_validate(json.loads(sys.argv[1]))
tracker = Collect()
run_task(spec, sys.argv[2], sys.argv[3], sys.argv[4], tracker)
print(json.dumps([v for n, _, v in tracker.points if n == "epoch_seconds"]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    console = Console()
    params = {"epochs": args.epochs, "batch_size": 64, "lr": 0.002, "seed": 0}
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-train-") as tmp:
        work = Path(tmp)
        frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
        frame.to_csv(work / "digits.csv", index=False)
        with ServerProcess(work / "home") as srv, Client(url=srv.url, token=srv.token) as c:
            ds = c.datasets.create("digits", work / "digits.csv")
            train, test = ds.split(train_size=0.8, seed=0, stratify="label")
            train.download(work / "train.csv")
            test.download(work / "test.csv")
            spec = {
                "task": "image-classification",
                "dataset": train.ref,
                "eval_dataset": test.ref,
                "target": "label",
                "params": params,
                "cpus": 1,
            }
            bare, job_epochs, first_any, first_train, job_wall = [], [], [], [], []
            for i in range(args.repeats):
                env = {**os.environ, "OMP_NUM_THREADS": "1", "AICLOUD_CPUS": "1"}
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        BARE,
                        json.dumps(spec),
                        str(work / "train.csv"),
                        str(work / "test.csv"),
                        str(work / f"bare{i}"),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                bare.append(sum(json.loads(out.stdout.strip().splitlines()[-1])))
                t0 = time.time()
                job = c.jobs.train(name=f"bench-{i}", **spec)
                submitted = time.time()
                job.wait(timeout=600)
                job_wall.append(time.time() - t0)
                assert job.status == "succeeded", job.logs()[-2000:]
                metrics = job.metrics()
                job_epochs.append(sum(metrics["epoch_seconds"]["values"]))
                first_any.append(min(min(s["timestamps"]) for s in metrics.values()) - submitted)
                first_train.append(min(metrics["train_loss"]["timestamps"]) - submitted)
            # metric history of a 100k-point run, through the API
            h = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60)
            run = h.post("/api/v1/runs", json={"name": "history"}).json()
            for b in range(10):
                points = [
                    {"name": "loss", "step": b * 10_000 + k, "value": 1.0 / (k + 1)} for k in range(10_000)
                ]
                h.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": points}).raise_for_status()
            history = []
            for _ in range(7):
                t = time.perf_counter()
                r = h.get(f"/api/v1/runs/{run['id']}/metrics")
                history.append((time.perf_counter() - t) * 1000)
                assert len(r.json()["metrics"]["loss"]["steps"]) == 100_000
    bare_s, job_s = statistics.median(bare), statistics.median(job_epochs)
    result = {
        "epochs": args.epochs,
        "repeats": args.repeats,
        "cpus": 1,
        "bare_train_seconds": round(bare_s, 3),
        "job_train_seconds": round(job_s, 3),
        "job_throughput_ratio": round(bare_s / job_s, 3),
        "job_wall_seconds": round(statistics.median(job_wall), 2),
        "submit_to_first_metric_s": round(statistics.median(first_any), 2),
        "submit_to_first_train_metric_s": round(statistics.median(first_train), 2),
        "metric_history_100k_ms_p50": round(statistics.median(history), 1),
        "targets": {
            "job_throughput_ratio": ">= 0.9",
            "submit_to_first_metric_s": "< 2",
            "metric_history_100k_ms": "< 300",
        },
    }
    table = Table(
        title=f"training benchmark (digits CNN, {args.epochs} epochs, 1 cpu, median of {args.repeats})"
    )
    for col in ("measure", "value", "target"):
        table.add_column(col)
    table.add_row("bare: training loop time", f"{bare_s:.2f} s", "")
    table.add_row("aicloud job: training loop time", f"{job_s:.2f} s", "")
    table.add_row("job throughput / bare throughput", f"{bare_s / job_s:.3f}", "≥ 0.9")
    table.add_row("job wall time (submit → succeeded)", f"{result['job_wall_seconds']} s", "")
    table.add_row("submit → first metric (system)", f"{result['submit_to_first_metric_s']} s", "< 2 s")
    table.add_row(
        "submit → first training metric (epoch 1)", f"{result['submit_to_first_train_metric_s']} s", ""
    )
    table.add_row(
        "metric history, 100k points, GET p50", f"{result['metric_history_100k_ms_p50']} ms", "< 300 ms"
    )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS / 'training.json'}")


if __name__ == "__main__":
    main()
