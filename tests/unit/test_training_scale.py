"""Scale-out training without processes: checkpoints (format, RNG, exact resume), bf16, the specs."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from torch import nn

from aicloud.artifacts.architectures import MLP
from aicloud.errors import InvalidDataError, ValidationError
from aicloud.schemas.training import CommandSpec, TrainParams, TrainSpec
from aicloud.training.checkpoint import Checkpoint, pack, rng_state, set_rng_state, unpack
from aicloud.training.loop import FitOptions, NullTracker, fit


def test_checkpoint_round_trip_restores_state_and_rng() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "misc": (1, 2.5, float("inf"), b"\x00raw", np.arange(6, dtype=np.uint32).reshape(2, 3), None),
        "by_int": {0: "zero", 7: torch.ones(2, dtype=torch.bfloat16)},
    }
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    data = pack(state, epoch=4, step=40, extra={"note": "x"}, rng=rng_state())
    expected = (torch.rand(4), np.random.rand(3), random.random())

    ckpt = unpack(data)
    assert ckpt.rng is not None
    set_rng_state(ckpt.rng)
    again = (torch.rand(4), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    assert (ckpt.epoch, ckpt.step, ckpt.extra) == (4, 40, {"note": "x"})
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt.state["model"][key], value)
    misc = ckpt.state["misc"]
    assert misc[:4] == (1, 2.5, float("inf"), b"\x00raw") and misc[5] is None
    assert np.array_equal(misc[4], state["misc"][4]) and misc[4].dtype == np.uint32
    assert ckpt.state["by_int"][0] == "zero" and ckpt.state["by_int"][7].dtype == torch.bfloat16
    restored = torch.optim.Adam(model.parameters(), lr=0.5)
    restored.load_state_dict(ckpt.state["optimizer"])
    assert restored.param_groups[0]["lr"] == 0.01
    assert b"pickle" not in data and data[8:].lstrip().startswith(b"{")  # a safetensors header


def test_checkpoint_refuses_objects_and_garbage() -> None:
    with pytest.raises(ValidationError) as info:
        pack({"model": {"w": torch.zeros(1)}, "fn": object()})
    assert "state.fn" in info.value.message
    with pytest.raises(InvalidDataError):
        unpack(b"\x00" * 4)
    with pytest.raises(InvalidDataError):
        from safetensors.torch import save

        unpack(save({"w": torch.zeros(1)}))  # safetensors, but not an aicloud checkpoint


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


SPEC = {"task": "image-classification", "dataset": "d:1", "eval_dataset": "e:1"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 65}, "workers"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"max_restarts": 11}, "max_restarts"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"precision": "fp8"}, "precision"),
        ({"gpus": -1}, "gpus"),
    ],
)
def test_scale_out_fields_are_validated(change: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        TrainSpec.model_validate({**SPEC, **change})
    assert info.value.errors()[0]["loc"][0] == field
    if field in ("workers", "max_restarts", "gpus"):
        with pytest.raises(pydantic.ValidationError):
            CommandSpec.model_validate({"command": "true", **change})


def test_checkpoints_default_on_with_restarts() -> None:
    assert TrainSpec.model_validate(SPEC).checkpoint_every == 0
    assert TrainSpec.model_validate({**SPEC, "max_restarts": 2}).checkpoint_every == 1
    assert (
        TrainSpec.model_validate({**SPEC, "max_restarts": 2, "checkpoint_every": 3}).checkpoint_interval == 3
    )
    assert (
        TrainSpec.model_validate({**SPEC, "max_restarts": 2, "checkpoint_every": 0}).checkpoint_interval == 0
    )
    assert isinstance(unpack(pack({})), Checkpoint)
