"""One conversion for the endpoint and ``models.load``: tensor inputs of models from your own code
(aicloud.artifacts.inputs), nulls and unseen categories of tabular models (the fitted Preprocessor).
Through the real server: tests/integration/test_model_kinds.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from aicloud.artifacts.format import save_onnx
from aicloud.artifacts.loader import load_model
from aicloud.artifacts.preprocess import Preprocessor
from aicloud.errors import BadRequestError, ValidationError
from aicloud.serving.runtime import ArtifactRuntime

from model_files import mlp_folder


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.b = torch.nn.Linear(4, 2)

    def forward(self, num: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return self.a(num) + self.b(extra)


def served(folder: Path) -> ArtifactRuntime:
    runtime = ArtifactRuntime(folder)
    runtime.load()
    runtime.warmup()
    return runtime


def predict(runtime: ArtifactRuntime, rows: Any) -> Any:
    (out,) = runtime.run_batch([runtime.prepare(rows)])
    return out


def test_a_single_tensor_input_takes_rows_of_its_shape(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    save_onnx(tmp_path, module, torch.zeros(2, 7))
    runtime = served(tmp_path)  # warm-up used to fail: "cannot reshape array of size 2 into (2,7)"
    assert [t.to_json() for t in runtime.inputs] == [{"name": "input", "datatype": "FP32", "shape": [-1, 7]}]
    rows = np.random.default_rng(0).normal(size=(5, 7)).tolist()
    want = load_model(tmp_path)(rows)
    np.testing.assert_allclose(predict(runtime, rows), want, atol=1e-6)
    np.testing.assert_allclose(predict(runtime, [{"input": r} for r in rows]), want, atol=1e-6)
    parts = runtime.run_batch([runtime.prepare(rows[:2]), runtime.prepare(rows[2:])])
    np.testing.assert_allclose(parts[0] + parts[1], want, atol=1e-6)
    for model in (runtime.prepare, load_model(tmp_path)):
        with pytest.raises(BadRequestError, match=r"inputs\[1\]: expected shape \[7\], got \[6\]"):
            model([rows[0], rows[1][:6]])
        with pytest.raises(BadRequestError, match=r"inputs\[0\]: expected numbers, got NoneType"):
            model([[None] * 7])


def test_several_named_inputs_take_objects_of_tensors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    example = {"extra": torch.zeros(1, 4), "num": torch.zeros(1, 3)}  # any order: forward's is kept
    save_onnx(tmp_path, TwoInputs(), example)
    runtime = served(tmp_path)
    assert [(t.name, t.shape) for t in runtime.inputs] == [("num", [-1, 3]), ("extra", [-1, 4])]
    rng = np.random.default_rng(1)
    rows = [{"num": rng.normal(size=3).tolist(), "extra": rng.normal(size=4).tolist()} for _ in range(4)]
    model = load_model(tmp_path)
    want = model(rows)
    np.testing.assert_allclose(predict(runtime, rows), want, atol=1e-6)
    columns = {"num": np.array([r["num"] for r in rows]), "extra": np.array([r["extra"] for r in rows])}
    np.testing.assert_allclose(model(columns), want, atol=1e-6)
    with pytest.raises(BadRequestError, match=r"inputs\[0\]: missing input\(s\) 'extra'"):
        runtime.prepare([{"num": [1, 2, 3]}])
    with pytest.raises(ValidationError, match=r"not parameters of TwoInputs\.forward"):
        save_onnx(tmp_path / "bad", TwoInputs(), {"x": torch.zeros(1, 3)})


def test_nulls_and_unseen_categories_agree_with_load_model(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": [20.0, 30.0, None, 50.0], "city": ["a", "b", "a", None], "y": [0, 1, 0, 1]})
    pre = Preprocessor.fit(frame, ["age", "city"])
    sig = {"inputs": [{"name": "age", "dtype": "float64"}, {"name": "city", "dtype": "string"}]}
    config = {
        "task": "tabular-classification",
        "preprocessing": pre.to_config(),
        "signature": sig,
        "labels": [0, 1],
    }
    folder, _ = mlp_folder(tmp_path, pre.width, [8], 2, config, seed=4, scale=1.0)
    runtime = served(folder)
    rows = [
        {"age": None, "city": "a"},
        {"age": 41.0, "city": None},
        {"age": 33.0, "city": "never-seen"},
        {"age": None, "city": None},
    ]
    model = load_model(folder)
    assert predict(runtime, rows) == model(rows).tolist()
    # an unseen category is a missing one: all zeros ("unknown"), in both paths
    assert (
        model.features([{"age": 1, "city": "zz"}]).tolist()
        == model.features([{"age": 1, "city": None}]).tolist()
    )
    assert (
        runtime._features([{"age": 1, "city": "zz"}]).tolist()
        == model.features([{"age": 1, "city": None}]).tolist()
    )
    numeric = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [0.0, 1.0, 1.0]})
    pre = Preprocessor.fit(numeric, ["a", "b"])
    sig = {"inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}]}
    config = {"task": "tabular-regression", "preprocessing": pre.to_config(), "signature": sig}
    folder, _ = mlp_folder(tmp_path / "num", pre.width, [4], 1, config, seed=5)
    runtime = served(folder)
    assert runtime.engine == "numpy"
    rows2 = [[None, 1.0], [2.0, None], [3.0, 0.0]]
    np.testing.assert_allclose(predict(runtime, rows2), load_model(folder)(rows2), atol=1e-6)
    np.testing.assert_allclose(
        predict(runtime, [{"a": None, "b": 1.0}]), load_model(folder)([{"a": None, "b": 1.0}]), atol=1e-6
    )


def test_a_rows_features_do_not_depend_on_its_batch(tmp_path: Path) -> None:
    """A number sent for a category is its text ("3"), even batched with a null (pandas would make
    the column float: "3.0", another category)."""
    frame = pd.DataFrame({"size": [1.0, 2.0, 3.0], "zone": ["3", "4", "3"]})
    pre = Preprocessor.fit(frame, ["size", "zone"])
    sig = {"inputs": [{"name": "size", "dtype": "float64"}, {"name": "zone", "dtype": "string"}]}
    config = {
        "task": "tabular-classification",
        "preprocessing": pre.to_config(),
        "signature": sig,
        "labels": [0, 1],
    }
    folder, _ = mlp_folder(tmp_path, pre.width, [4], 2, config, seed=6, scale=1.0)
    runtime, model = served(folder), load_model(folder)
    alone = model.features([{"size": 1.0, "zone": 3}])
    batched = model.features([{"size": 1.0, "zone": 3}, {"size": 2.0, "zone": None}])
    assert batched[0].tolist() == alone[0].tolist() and alone[0, 1:].tolist() == [1.0, 0.0]
    together = runtime.run_batch(
        [runtime.prepare([{"size": 1.0, "zone": 3}]), runtime.prepare([{"size": 2.0, "zone": None}])]
    )
    assert together == [
        model([{"size": 1.0, "zone": 3}]).tolist(),
        model([{"size": 2.0, "zone": None}]).tolist(),
    ]
