"""The training loop of the built-in tasks: epochs of shuffled mini-batches, evaluation, early stopping.

It reads top to bottom: make the optimizer; per epoch shuffle (seeded generator), step through
batches, evaluate, log metrics, keep the best weights; restore them at the end when early stopping is on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from aicloud.schemas.training import TrainParams


class Tracker(Protocol):
    """Where per-epoch metrics go (the runtime's ``log_metric`` in a job)."""

    def log_metric(self, name: str, value: float, step: int | None = None) -> None: ...


class NullTracker:
    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass


Evaluate = Callable[[nn.Module], dict[str, float]]
"""Computes eval metrics (``eval_loss`` first) of a model in eval mode."""


@dataclass
class FitResult:
    metrics: dict[str, float]  # eval metrics of the kept model
    epochs: int  # epochs run
    best_epoch: int  # the epoch whose weights were kept


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=params.lr, momentum=0.9, weight_decay=params.weight_decay
        )
    if params.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    evaluate: Evaluate,
    params: TrainParams,
    tracker: Tracker,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` on ``(x, y)`` for ``params.epochs``; see the module docstring."""
    optimizer = make_optimizer(model, params)
    gen = torch.Generator().manual_seed(params.seed)
    n = x.shape[0]
    best_loss, best_epoch, best_metrics = math.inf, 0, {}
    best_state: dict[str, torch.Tensor] | None = None
    metrics: dict[str, float] = {}
    epoch = 0
    for epoch in range(1, params.epochs + 1):
        # --- one pass over the shuffled training data
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, params.batch_size):
            idx = perm[start : start + params.batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        train_loss = total / max(n, 1)
        train_seconds = time.perf_counter() - t0

        # --- evaluate, log, remember the best
        model.eval()
        with torch.inference_mode():
            metrics = evaluate(model)
        seconds = time.perf_counter() - t0
        tracker.log_metric("train_loss", train_loss, step=epoch)
        for name, value in metrics.items():
            tracker.log_metric(name, value, step=epoch)
        tracker.log_metric("epoch_seconds", seconds, step=epoch)
        tracker.log_metric("samples_per_second", n / max(train_seconds, 1e-9), step=epoch)
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        log(f"epoch {epoch}/{params.epochs} train_loss={train_loss:.4f} {shown} ({seconds:.2f}s)")

        eval_loss = metrics.get("eval_loss", math.nan)
        if eval_loss < best_loss or best_state is None:
            best_loss, best_epoch, best_metrics = eval_loss, epoch, dict(metrics)
            if params.patience > 0:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                best_state = {}
        elif params.patience > 0 and epoch - best_epoch >= params.patience:
            log(
                f"early stopping: eval_loss has not improved for {params.patience} epochs "
                f"(best: epoch {best_epoch})"
            )
            break

    # --- keep the best weights when early stopping is on; otherwise the last ones
    if params.patience > 0 and best_state:
        model.load_state_dict(best_state)
        model.eval()
        return FitResult(metrics=best_metrics, epochs=epoch, best_epoch=best_epoch)
    model.eval()
    return FitResult(metrics=metrics, epochs=epoch, best_epoch=epoch)
