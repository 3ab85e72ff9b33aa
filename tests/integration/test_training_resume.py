"""The training loop in process: exact resume from a checkpoint, bf16 steps on the CPU (real runs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from aicloud.artifacts.architectures import MLP
from aicloud.schemas.training import TrainParams
from aicloud.training.checkpoint import pack, unpack
from aicloud.training.loop import FitOptions, NullTracker, fit


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


class Recorder:
    """In-memory checkpoints, through the real format."""

    def __init__(self) -> None:
        self.saved: dict[int, bytes] = {}

    def save(self, state: dict[str, Any], epoch: int, extra: dict[str, Any]) -> None:
        self.saved[epoch] = pack(state, epoch=epoch, step=epoch, extra=extra)


def _train(
    params: TrainParams, options: FitOptions, tracker: Any = None
) -> tuple[nn.Module, dict[str, float]]:
    x, y = _data()
    torch.manual_seed(params.seed)
    model = MLP(6, params.hidden, 2, params.dropout)
    loss_fn = nn.CrossEntropyLoss()

    def evaluate(m: nn.Module) -> dict[str, float]:
        logits = m(x).float()
        return {
            "eval_loss": float(loss_fn(logits, y)),
            "eval_accuracy": float((logits.argmax(1) == y).double().mean()),
        }

    result = fit(
        model, x, y, loss_fn, evaluate, params, tracker or NullTracker(), log=lambda _: None, options=options
    )
    return model, result.metrics


class Points:
    def __init__(self) -> None:
        self.points: list[tuple[str, int | None, float]] = []

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.points.append((name, step, float(value)))


def test_resume_from_a_checkpoint_reaches_the_same_model() -> None:
    params = TrainParams(epochs=5, batch_size=16, lr=0.01, hidden=[16], dropout=0.3, seed=3, patience=2)
    recorder = Recorder()
    full_model, full_metrics = _train(params, FitOptions(checkpoint_every=1, checkpoints=recorder))
    assert sorted(recorder.saved) == [1, 2, 3, 4, 5]

    torch.manual_seed(12345)  # a fresh process: other generator states until the checkpoint's
    points = Points()
    resumed = FitOptions(checkpoint_every=1, checkpoints=Recorder(), resume=unpack(recorder.saved[2]))
    model, metrics = _train(params, resumed, points)
    assert metrics == full_metrics
    for key, value in full_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    steps = [step for name, step, _ in points.points if name == "train_loss"]
    assert steps == [3, 4, 5]
    assert ("resumed_from_epoch", 2, 2.0) in points.points


def test_resume_after_the_last_epoch_only_evaluates() -> None:
    params = TrainParams(epochs=2, batch_size=32, hidden=[8], seed=1)
    recorder = Recorder()
    _, full_metrics = _train(params, FitOptions(checkpoint_every=2, checkpoints=recorder))
    _, metrics = _train(params, FitOptions(resume=unpack(recorder.saved[2])))
    assert metrics == full_metrics


def test_bf16_training_steps_work_on_the_cpu() -> None:
    params = TrainParams(epochs=3, batch_size=16, lr=0.02, hidden=[16], seed=0)
    points = Points()
    _, metrics = _train(params, FitOptions(precision="bf16"), points)
    losses = [v for name, _, v in points.points if name == "train_loss"]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert metrics["eval_accuracy"] > 0.7
