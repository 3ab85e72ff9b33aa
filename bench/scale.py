"""Scale-out benchmark: multi-worker (DDP) throughput, and what a killed worker costs.

    python bench/scale.py [--section ddp|restart|sweep|all] [--epochs 4]

Sections (one function each, registered in SECTIONS; each returns its JSON results):

* ``ddp``: the digits CNN on digits x8 (11.5k train rows) as an aicloud job with 1 worker
  (1 thread), 1 worker with 2 threads, and 2 workers (1 thread each, DistributedDataParallel
  over gloo). Throughput is rank 0's ``samples_per_second`` (global rows / training-loop
  seconds), median over the epochs after the first; also the wall time and final accuracy.
* ``restart``: a 2-worker digits job (12 epochs, ``max_restarts: 1``) whose rank 1 is killed
  with ``kill -9`` as soon as epoch 5 ends (read from the live log), with checkpoints every 1
  and every 2 epochs, against the same job uninterrupted. "Epochs lost" = completed epochs
  that had to run again (rank 0 logged them twice); target: no more than the checkpoint interval.
  The resumed job should reach the uninterrupted job's final accuracy.

Starts its own control plane (SQLite) in a temporary AICLOUD_HOME. Prints a table per
section and merges the results into bench/results/scale.json (other sections' results stay).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from scale_sweep import bench_sweep
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.client.jobs import Job
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
RESULT_FILE = RESULTS / "scale.json"
console = Console()


@dataclass
class Context:
    """What every section gets: the server, a client, a scratch folder, the arguments."""

    srv: ServerProcess
    client: Client
    work: Path
    args: argparse.Namespace

    def digits(self, copies: int = 1) -> tuple[DatasetVersion, DatasetVersion]:
        """Digits (``copies`` times over, with a little pixel noise on the copies), split 80/20."""
        name = f"digits-x{copies}"
        path = self.work / f"{name}.csv"
        if not path.exists():
            frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
            parts = [frame]
            for i in range(1, copies):
                noisy = frame.copy()
                pixels = noisy.columns.drop("label")
                rng = pd.Series(range(len(noisy))).sample(frac=1.0, random_state=i).to_numpy() % 3 - 1
                noisy[pixels] = (noisy[pixels].add(rng, axis=0)).clip(0, 16)
                parts.append(noisy)
            pd.concat(parts, ignore_index=True).to_csv(path, index=False)
        ds = self.client.datasets.create(name, path)
        train, test = ds.split(train_size=0.8, seed=0, stratify="label")
        return train, test


def train_job(ctx: Context, data: tuple[DatasetVersion, DatasetVersion], **kwargs: Any) -> Job:
    train, test = data
    return ctx.client.jobs.train(
        task="image-classification", dataset=train, eval_dataset=test, target="label", **kwargs
    )


def finished(job: Job, timeout: float = 900) -> Job:
    job.wait(timeout=timeout)
    if job.status != "succeeded":
        raise RuntimeError(f"job {job.id} {job.status}: {job.logs()[-3000:]}")
    return job


# -----------------------------------------------------------------------------------------------------
# section: ddp


def bench_ddp(ctx: Context) -> dict[str, Any]:
    data = ctx.digits(copies=8)
    params = {"epochs": ctx.args.epochs, "batch_size": 128, "lr": 0.003, "seed": 0}
    configs = [("1 worker x 1 thread", 1, 1), ("1 worker x 2 threads", 1, 2), ("2 workers x 1 thread", 2, 1)]
    rows: list[dict[str, Any]] = []
    for label, workers, cpus in configs:
        t0 = time.monotonic()
        job = finished(train_job(ctx, data, params=params, workers=workers, cpus=cpus))
        wall = time.monotonic() - t0
        metrics = job.metrics()
        rates = metrics["samples_per_second"]["values"][1:] or metrics["samples_per_second"]["values"]
        rows.append(
            {
                "config": label,
                "workers": workers,
                "threads_per_worker": cpus,
                "samples_per_second": round(statistics.median(rates), 1),
                "epoch_seconds": round(statistics.median(metrics["epoch_seconds"]["values"][1:] or [0]), 3),
                "wall_seconds": round(wall, 1),
                "eval_accuracy": round(metrics["eval_accuracy"]["values"][-1], 4),
                "cpu_seconds": job.info.usage.get("cpu_seconds"),
            }
        )
    base = rows[0]["samples_per_second"]
    for row in rows:
        row["speedup_vs_1x1"] = round(row["samples_per_second"] / base, 3)
    table = Table(title=f"DDP throughput (digits x8 CNN, {ctx.args.epochs} epochs, {os.cpu_count()} cores)")
    for col in ("config", "samples/s", "speedup", "epoch s", "wall s", "eval acc", "cpu s"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["config"],
            f"{row['samples_per_second']:.0f}",
            f"{row['speedup_vs_1x1']:.2f}x",
            f"{row['epoch_seconds']:.2f}",
            f"{row['wall_seconds']:.1f}",
            f"{row['eval_accuracy']:.4f}",
            f"{row['cpu_seconds']}",
        )
    console.print(table)
    return {"dataset_rows": 8 * 1797, "params": params, "cores": os.cpu_count(), "runs": rows}


# -----------------------------------------------------------------------------------------------------
# section: restart


def _steps(job: Job) -> list[int]:
    return list(job.metrics("train_loss").get("train_loss", {}).get("steps", []))


def _kill_after(ctx: Context, job: Job, epoch: int) -> float:
    """kill -9 rank 1 as soon as the live log shows that ``epoch`` ended; returns when (unix time)."""
    deadline = time.monotonic() + 600
    marker = f"epoch {epoch}/"
    while marker not in job.logs():
        if time.monotonic() > deadline or job.status not in ("running", "pending"):
            raise RuntimeError(f"job {job.id} never reached epoch {epoch}: {job.status}")
        time.sleep(0.05)
    record = json.loads((ctx.srv.home / "jobs" / job.id / "child.json").read_text())
    pid = next(int(w["pid"]) for w in record["workers"] if int(w["rank"]) == 1)
    os.kill(pid, signal.SIGKILL)
    return time.time()


def bench_restart(ctx: Context) -> dict[str, Any]:
    data = ctx.digits(copies=1)
    epochs, kill_after = 12, 5
    params = {"epochs": epochs, "batch_size": 32, "lr": 0.002, "seed": 0}
    t0 = time.monotonic()
    base = finished(train_job(ctx, data, params=params, workers=2, max_restarts=1, checkpoint_every=1))
    base_wall = time.monotonic() - t0
    base_acc = base.metrics("eval_accuracy")["eval_accuracy"]["values"][-1]
    rows: list[dict[str, Any]] = []
    for interval in (1, 2):
        t0 = time.monotonic()
        job = train_job(ctx, data, params=params, workers=2, max_restarts=1, checkpoint_every=interval)
        killed_at = _kill_after(ctx, job, kill_after)
        finished(job)
        wall = time.monotonic() - t0
        metrics = job.metrics()
        resumed = metrics.get("resumed_from_epoch", {}).get("values", [None])[0]
        # completed epochs that ran twice, from rank 0's log lines (metrics of the killed attempt's
        # last moments may not have been sent)
        ended = [
            int(line.split()[1].split("/")[0])
            for line in job.logs().splitlines()
            if line.startswith("epoch ")
        ]
        rerun = sorted({e for e in ended if ended.count(e) > 1})
        accuracy = metrics["eval_accuracy"]["values"][-1]
        first_after = min((t for t in metrics["train_loss"]["timestamps"] if t > killed_at), default=None)
        rows.append(
            {
                "checkpoint_every": interval,
                "killed_after_epoch": kill_after,
                "resumed_from_epoch": resumed,
                "epochs_lost": len(rerun),
                "epochs_lost_target": f"<= {interval}",
                "attempts": job.info.attempt + 1,
                "eval_accuracy": round(accuracy, 4),
                "same_accuracy_as_uninterrupted": abs(accuracy - base_acc) < 1e-9,
                "wall_seconds": round(wall, 1),
                "extra_wall_seconds": round(wall - base_wall, 1),
                "kill_to_next_epoch_s": round(first_after - killed_at, 1) if first_after else None,
            }
        )
    table = Table(
        title=f"kill -9 of a worker after epoch {kill_after} of {epochs} (2 workers, max_restarts 1)"
    )
    columns = (
        "ckpt every",
        "resumed from",
        "epochs lost",
        "target",
        "acc",
        "= uninterrupted",
        "extra wall s",
    )
    for col in (*columns, "kill → next epoch s"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            str(row["checkpoint_every"]),
            str(int(row["resumed_from_epoch"] or 0)),
            str(row["epochs_lost"]),
            row["epochs_lost_target"],
            f"{row['eval_accuracy']:.4f}",
            "yes" if row["same_accuracy_as_uninterrupted"] else "no",
            f"{row['extra_wall_seconds']:.1f}",
            str(row["kill_to_next_epoch_s"]),
        )
    console.print(table)
    console.print(f"uninterrupted: eval_accuracy={base_acc:.4f}, wall {base_wall:.1f} s")
    return {
        "params": params,
        "workers": 2,
        "uninterrupted": {"eval_accuracy": round(base_acc, 4), "wall_seconds": round(base_wall, 1)},
        "runs": rows,
    }


# -----------------------------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "ddp": bench_ddp,
    "restart": bench_restart,
    "sweep": bench_sweep,  # bench/scale_sweep.py
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the ddp section's jobs")
    args = ap.parse_args()
    chosen = list(SECTIONS) if args.section == "all" else [args.section]
    results: dict[str, Any] = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.exists() else {}
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-scale-") as tmp:
        work = Path(tmp)
        with ServerProcess(work / "home") as srv, Client(url=srv.url, token=srv.token) as client:
            ctx = Context(srv=srv, client=client, work=work, args=args)
            for name in chosen:
                started = time.monotonic()
                results[name] = {**SECTIONS[name](ctx), "seconds": round(time.monotonic() - started, 1)}
                results[name]["load_average"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    RESULT_FILE.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULT_FILE}")


if __name__ == "__main__":
    main()
