"""Scale-out training without processes: the checkpoint format (state, RNG) and the specs. Resuming
and bf16 training runs are in tests/integration/test_training_resume.py."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from torch import nn

from aicloud.errors import InvalidDataError, ValidationError
from aicloud.schemas.training import CommandSpec, TrainSpec
from aicloud.training.checkpoint import Checkpoint, pack, rng_state, set_rng_state, unpack


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
