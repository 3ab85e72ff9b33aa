"""The ``sweep`` section of bench/scale.py: what ASHA pruning saves in a hyperparameter sweep.

    python bench/scale.py --section sweep

A 20-trial TPE sweep (seeded) of the digits CNN, 20 epochs a trial, 2 trials at a time, with ASHA
(min_resource 1, reduction factor 3: rungs at epochs 1, 3 and 9) against the same sweep without
pruning. Reported: epochs spent by all trials (every epoch a trial ran, including those it ran
between a prune decision and its cancellation), the best trial's eval accuracy, trials pruned and
wall time. Target: at least 2x fewer epochs for at most 0.5 points of accuracy lost.

Kept out of scale.py (its own module, one function) so that sections can grow side by side.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

TRIALS = 20
EPOCHS = 20
PARALLELISM = 2
SPACE: dict[str, Any] = {
    "lr": {"type": "log_uniform", "low": 1e-4, "high": 3e-2},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
}
PRUNERS: dict[str, Any] = {
    "asha": {"type": "asha", "min_resource": 1, "reduction_factor": 3},
    "none": {"type": "none"},
}


def _run(ctx: Any, data: Any, pruner: str) -> dict[str, Any]:
    train, test = data
    started = time.monotonic()
    sweep = ctx.client.jobs.sweep(
        SPACE,
        task="image-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params={"epochs": EPOCHS, "seed": 0},
        model_name=f"bench-sweep-{pruner}",
        name=f"bench-sweep-{pruner}",
        max_trials=TRIALS,
        parallelism=PARALLELISM,
        sampler={"type": "tpe", "seed": 0, "n_startup_trials": 8},
        pruner=PRUNERS[pruner],
    )
    sweep.wait(timeout=3600)
    wall = time.monotonic() - started
    table = sweep.trials()
    if sweep.status != "succeeded" or table.best is None:
        raise RuntimeError(f"sweep {sweep.id} {sweep.status}: {sweep.info.message}")
    states = [t.state for t in table.trials]
    return {
        "sweep_id": sweep.id,
        "trials": len(table.trials),
        "pruned": states.count("pruned"),
        "complete": states.count("complete"),
        "epochs": table.epochs,
        "best_eval_accuracy": round(float(table.best.value or 0.0), 4),
        "best_trial": table.best.number,
        "best_params": table.best.params,
        "wall_seconds": round(wall, 1),
        "per_trial": [
            {
                "number": t.number,
                "state": t.state,
                "epochs": t.epochs,
                "pruned_at": t.pruned_at,
                "value": t.value,
            }
            for t in table.trials
        ],
    }


def bench_sweep(ctx: Any) -> dict[str, Any]:
    """ASHA against no pruning on the same TPE sweep; see the module docstring."""
    data = ctx.digits()
    runs = {name: _run(ctx, data, name) for name in ("none", "asha")}
    base, asha = runs["none"], runs["asha"]
    saving = base["epochs"] / max(asha["epochs"], 1)
    lost = 100 * (base["best_eval_accuracy"] - asha["best_eval_accuracy"])
    out = Table(
        title=f"sweep: {TRIALS} TPE trials x {EPOCHS} epochs of the digits CNN, {PARALLELISM} at a time"
    )
    for col in ("pruner", "trials pruned", "epochs spent", "best eval acc", "wall s"):
        out.add_column(col)
    for name, r in runs.items():
        out.add_row(
            name,
            str(r["pruned"]),
            str(r["epochs"]),
            f"{r['best_eval_accuracy']:.4f}",
            f"{r['wall_seconds']:.0f}",
        )
    console = Console()
    console.print(out)
    verdict = "met" if saving >= 2.0 and lost <= 0.5 else "NOT met"
    console.print(
        f"ASHA: {saving:.2f}x fewer epochs, {lost:+.2f} accuracy points lost "
        f"(target: >= 2x fewer, <= 0.5 points lost: {verdict})"
    )
    return {
        "trials": TRIALS,
        "epochs_per_trial": EPOCHS,
        "parallelism": PARALLELISM,
        "space": SPACE,
        "runs": runs,
        "epochs_ratio": round(saving, 2),
        "accuracy_points_lost": round(lost, 2),
        "target_met": verdict == "met",
    }
