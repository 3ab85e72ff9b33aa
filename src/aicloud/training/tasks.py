"""The built-in tasks of ``train`` jobs: tabular classification/regression (MLP), image classification (CNN).

:func:`run_task` reads top to bottom: read the data, fit preprocessing on the train split only, build
the model (seeded), train it (:func:`aicloud.training.loop.fit`), evaluate, and save the artifact
(safetensors + config.json) under ``output_dir/model``.

Recommended demo params (2 cores, CPU):

* digits, image-classification (CNN), 1437 train / 360 eval rows:
  ``{"epochs": 15, "batch_size": 64, "lr": 0.002}`` → eval accuracy ≈ 0.98;
* breast cancer, tabular-classification (MLP), 455 / 114 rows:
  ``{"epochs": 20, "batch_size": 32, "lr": 0.001}`` → eval accuracy ≈ 0.97.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from aicloud.errors import ValidationError
from aicloud.schemas.training import TrainSpec, check_train_spec, image_shape_of
from aicloud.training.artifacts import save_builtin
from aicloud.training.datasets import read_dataset
from aicloud.training.loop import FitResult, NullTracker, Tracker, fit
from aicloud.training.models import CNN, MLP
from aicloud.training.preprocess import LabelEncoder, Preprocessor, TargetScaler, dtype_name, signature

EVAL_BATCH = 4096


@dataclass
class TaskResult:
    metrics: dict[
        str, float
    ]  # eval metrics of the kept model, e.g. {"eval_accuracy": 0.97, "eval_loss": ...}
    model_dir: Path  # config.json + model.safetensors


def task_cpus(spec: TrainSpec) -> int:
    """Torch threads for the task: ``AICLOUD_CPUS`` (set by the executor), else the spec's ``cpus``."""
    try:
        return max(1, int(os.environ.get("AICLOUD_CPUS") or spec.cpus))
    except ValueError:
        return spec.cpus


def run_task(
    spec: TrainSpec,
    train_path: str | Path,
    eval_path: str | Path | None,
    output_dir: str | Path,
    tracker: Tracker | None = None,
) -> TaskResult:
    """Train the spec's task on ``train_path``, evaluate on ``eval_path`` and save the model.

    Without ``eval_path`` a stratified 20 % of the train data (seeded) is held out for evaluation.
    Torch uses ``task_cpus(spec)`` threads while the task runs; the previous count is restored.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(task_cpus(spec))
    try:
        return _run(spec, Path(train_path), Path(eval_path) if eval_path else None, Path(output_dir), tracker)
    finally:
        torch.set_num_threads(previous)


def _run(
    spec: TrainSpec, train_path: Path, eval_path: Path | None, output_dir: Path, tracker: Tracker | None
) -> TaskResult:
    params, target = spec.params, spec.target
    classify = spec.task != "tabular-regression"
    tracker = tracker or NullTracker()
    started = time.perf_counter()

    # --- data: read, check against the spec, hold out an eval split if none was given
    train, schema = read_dataset(train_path)
    check_train_spec(spec, schema, None)
    if eval_path is not None:
        evaluation, _ = read_dataset(eval_path)
        if target not in evaluation.columns:
            raise ValidationError.field("spec.eval_dataset", f"the eval data has no column {target!r}")
    else:
        train, evaluation = _holdout(train, target, classify, params.seed)
    features = [c for c in train.columns if c != target]
    image_shape = image_shape_of(schema, target) if spec.task == "image-classification" else None

    # --- targets: label indices (classification) or standardised values (regression), fitted on train
    labels: LabelEncoder | None = None
    scaler: TargetScaler | None = None
    if classify:
        labels = LabelEncoder.fit(train[target])
        if len(labels.labels) < 2:
            raise ValidationError.field(
                "spec.target", f"the train data has {len(labels.labels)} class(es); need ≥ 2"
            )
        y_train_np, y_eval_np = labels.encode(train[target]), labels.encode(evaluation[target])
        keep = y_train_np >= 0
        train, y_train_np = train[keep], y_train_np[keep]
    else:
        scaler = TargetScaler.fit(train[target])
        y_train_np, y_eval_np = scaler.encode(train[target]), scaler.encode(evaluation[target])
        keep, keep_eval = np.isfinite(y_train_np), np.isfinite(y_eval_np)
        train, y_train_np = train[keep], y_train_np[keep]
        evaluation, y_eval_np = evaluation[keep_eval], y_eval_np[keep_eval]

    missing = [c for c in features if c not in evaluation.columns]
    if missing:
        raise ValidationError.field(
            "spec.eval_dataset", f"the eval data lacks feature column(s) {missing[:10]}"
        )
    if len(train) == 0 or len(evaluation) == 0:
        raise ValidationError.field(
            "spec.target", f"no {'train' if len(train) == 0 else 'eval'} rows have a value in {target!r}"
        )

    # --- features: fitted on the train split only, applied to both
    pre = Preprocessor.fit(train, features, image_shape=image_shape)
    x_train = torch.from_numpy(pre.transform(train))
    x_eval = torch.from_numpy(pre.transform(evaluation))
    y_train = torch.from_numpy(y_train_np)
    y_eval = torch.from_numpy(y_eval_np)
    if not classify:
        y_train, y_eval = y_train.reshape(-1, 1), y_eval.reshape(-1, 1)

    # --- model, seeded
    torch.manual_seed(params.seed)
    np.random.seed(params.seed % 2**32)
    out_features = len(labels.labels) if labels is not None else 1
    model: nn.Module
    if image_shape is not None:
        model = CNN(image_shape, out_features, params.hidden, params.dropout)
    else:
        model = MLP(pre.width, params.hidden, out_features, params.dropout)
    loss_fn: nn.Module = nn.CrossEntropyLoss(ignore_index=-1) if classify else nn.MSELoss()

    def evaluate(m: nn.Module) -> dict[str, float]:
        outputs = torch.cat([m(x_eval[i : i + EVAL_BATCH]) for i in range(0, len(x_eval), EVAL_BATCH)])
        if classify:
            return _classification_metrics(outputs, y_eval)
        assert scaler is not None
        return _regression_metrics(outputs, y_eval, scaler)

    # --- train
    print(
        f"task {spec.task}: {len(x_train)} train rows, {len(x_eval)} eval rows, {len(features)} features"
        f" → {type(model).__name__} ({sum(p.numel() for p in model.parameters())} parameters), "
        f"{torch.get_num_threads()} thread(s)",
        flush=True,
    )
    result: FitResult = fit(model, x_train, y_train, loss_fn, evaluate, params, tracker, log=_print)

    # --- save: weights + everything needed to turn raw rows into predictions
    config: dict[str, Any] = {
        "task": spec.task,
        "preprocessing": pre.to_config(),
        "signature": signature(train, features, target, dtype_name(train[target]) if classify else "float64"),
        "target": target,
        "output": "logits" if classify else "values",
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in result.metrics.items()},
        "training": {"epochs": result.epochs, "best_epoch": result.best_epoch, "params": params.model_dump()},
    }
    if labels is not None:
        config["labels"] = labels.labels
    if scaler is not None:
        config["target_scale"] = [scaler.mean, scaler.std]
    model_dir = save_builtin(output_dir / "model", model, config)
    _print(
        f"done in {time.perf_counter() - started:.1f}s: "
        + " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    )
    return TaskResult(metrics=result.metrics, model_dir=model_dir)


def _print(line: str) -> None:
    print(line, flush=True)


def _holdout(
    frame: pd.DataFrame, target: str, classify: bool, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split  # only here: a second to import

    stratify = None
    if classify:
        counts = frame[target].value_counts()
        if len(counts) > 1 and counts.min() >= 2:
            stratify = frame[target]
    train, evaluation = train_test_split(frame, test_size=0.2, random_state=seed % 2**32, stratify=stratify)
    return train, evaluation


def _classification_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    valid = y >= 0
    loss = (
        nn.functional.cross_entropy(logits[valid], y[valid])
        if bool(valid.any())
        else torch.tensor(float("nan"))
    )
    accuracy = (logits.argmax(dim=1) == y).double().mean() if len(y) else torch.tensor(float("nan"))
    return {"eval_loss": float(loss), "eval_accuracy": float(accuracy)}


def _regression_metrics(pred: torch.Tensor, y: torch.Tensor, scaler: TargetScaler) -> dict[str, float]:
    loss = float(nn.functional.mse_loss(pred, y)) if len(y) else float("nan")
    p = scaler.decode(pred.numpy().reshape(-1))
    t = scaler.decode(y.numpy().reshape(-1))
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum()) if len(t) else 0.0
    return {
        "eval_loss": loss,
        "eval_rmse": float(np.sqrt((err**2).mean())) if len(t) else float("nan"),
        "eval_mae": float(np.abs(err).mean()) if len(t) else float("nan"),
        "eval_r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
    }
