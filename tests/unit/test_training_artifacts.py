"""aicloud.artifacts: the model format (safetensors or ONNX + config.json), never pickle."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from aicloud.artifacts.architectures import CNN, MLP, build_model
from aicloud.artifacts.format import save_builtin, save_onnx
from aicloud.artifacts.loader import load_model
from aicloud.artifacts.preprocess import Preprocessor
from aicloud.errors import InvalidDataError, ValidationError


def frame(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, n), "c": rng.choice(["x", "y"], n)})


def saved_mlp(folder: Path) -> tuple[MLP, Preprocessor, pd.DataFrame]:
    torch.manual_seed(0)
    data = frame()
    pre = Preprocessor.fit(data, ["a", "b", "c"])
    model = MLP(pre.width, [8], 3, dropout=0.5).eval()
    config = {
        "task": "tabular-classification",
        "preprocessing": pre.to_config(),
        "labels": ["lo", "mid", "hi"],
    }
    save_builtin(folder, model, config)
    return model, pre, data


def test_builtin_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    model, pre, data = saved_mlp(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path)
    with torch.inference_mode():
        expected = model(torch.from_numpy(pre.transform(data))).numpy()
    assert np.array_equal(loaded.outputs(data), expected)
    labels = np.asarray(["lo", "mid", "hi"])[expected.argmax(axis=1)]
    assert loaded(data).tolist() == labels.tolist()
    assert loaded(data.to_dict("records")).tolist() == labels.tolist()
    assert loaded(data.to_numpy()).tolist() == labels.tolist()  # 2-D array in signature order
    proba = loaded.predict_proba(data)
    assert proba.shape == (20, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert loaded.config["architecture"] == model.architecture
    assert loaded([]).shape == (0,) and loaded.predict_proba([]).shape == (0, 3)


def test_cnn_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CNN([8, 8], 10, hidden=[16], dropout=0.1).eval()
    cols = [f"p{i}" for i in range(64)]
    data = pd.DataFrame(np.random.default_rng(0).random((5, 64)), columns=cols)
    pre = Preprocessor.fit(data, cols, image_shape=[8, 8])
    save_builtin(
        tmp_path,
        model,
        {"task": "image-classification", "preprocessing": pre.to_config(), "labels": list(range(10))},
    )
    with torch.inference_mode():
        expected = model(torch.from_numpy(pre.transform(data))).numpy()
    assert np.array_equal(load_model(tmp_path).outputs(data), expected)
    big = CNN([3, 28, 28], 4)
    assert isinstance(build_model(big.architecture), CNN)
    assert big(torch.zeros(2, 3, 28, 28)).shape == (2, 4)


class Custom(nn.Module):
    """Not a built-in architecture: goes through ONNX."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.conv(x))).flatten(1)) * 2.0 + torch.tanh(x.mean())


def test_custom_module_to_onnx_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Custom()
    save_onnx(tmp_path, model, torch.zeros(1, 1, 8, 8), {"task": "classification", "labels": ["a", "b", "c"]})
    assert model.training  # mode restored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.onnx"]
    x = np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32)
    loaded = load_model(tmp_path)
    model.eval()
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        loaded.outputs(x), expected, atol=1e-5, rtol=1e-5
    )  # dynamic batch axis: 7 rows
    np.testing.assert_allclose(
        loaded.outputs(x.reshape(7, 64)), expected, atol=1e-5
    )  # flat rows are reshaped
    assert loaded(x).tolist() == np.asarray(["a", "b", "c"])[expected.argmax(axis=1)].tolist()
    assert loaded.config["input_shape"] == [1, 8, 8]


def test_load_model_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved_mlp(tmp_path / "m")
    assert not [p for p in (tmp_path / "m").iterdir() if p.suffix in (".pt", ".pth", ".pkl", ".bin")]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    assert load_model(tmp_path / "m")(frame()).shape == (20,)


def test_unknown_architecture_and_broken_folders_are_clear_errors(tmp_path: Path) -> None:
    saved_mlp(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architecture"] = {"type": "pickled-transformer"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidDataError, match=r"unknown architecture type 'pickled-transformer'.*mlp, cnn"):
        load_model(tmp_path)
    config["architecture"] = {"type": "mlp", "in_features": 3, "hidden": [2], "out_features": 3}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidDataError, match="do not fit"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InvalidDataError, match="not an aicloud model config"):
        load_model(tmp_path)
    with pytest.raises(InvalidDataError, match=r"no config\.json"):
        load_model(tmp_path / "missing")


def test_bad_inputs_name_what_is_wrong(tmp_path: Path) -> None:
    saved_mlp(tmp_path)
    model = load_model(tmp_path)
    with pytest.raises(ValidationError, match=r"missing input column.*'c'"):
        model([{"a": 1.0, "b": 2}])
    with pytest.raises(ValidationError, match="expected 3 values per row"):
        model(np.zeros((2, 5)))


def test_load_model_leaves_torch_threads_alone(tmp_path: Path) -> None:
    saved_mlp(tmp_path)
    before = torch.get_num_threads()
    load_model(tmp_path)(frame())
    assert torch.get_num_threads() == before
