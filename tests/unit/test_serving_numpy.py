"""The built-in MLP served in numpy (aicloud.serving.numpy_mlp): same outputs as torch (that serving
it never imports torch: tests/integration/test_serving_numpy_imports.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aicloud.artifacts.architectures import CNN
from aicloud.artifacts.format import save_builtin
from aicloud.artifacts.loader import load_model
from aicloud.artifacts.preprocess import Preprocessor
from aicloud.errors import InvalidDataError
from aicloud.serving import numpy_mlp
from aicloud.serving.runtime import ArtifactRuntime, Prepared

from model_files import digits_like, mlp_folder, trained_like


@pytest.mark.parametrize("hidden", [[], [32], [256, 256], [16, 8, 4]])
def test_numpy_forward_equals_torch(tmp_path: Path, hidden: list[int]) -> None:
    folder, module = mlp_folder(tmp_path, 64, hidden, 10, {"task": "tabular-classification"})
    config = json.loads((folder / "config.json").read_text())
    assert numpy_mlp.supports(config, folder)
    run = numpy_mlp.load(folder, config)
    rng = np.random.default_rng(1)
    for rows in (1, 7, 64):
        x = rng.normal(size=(rows, 64)).astype(np.float32)  # standardised features
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
        got = run(x)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_numpy_forward_equals_torch_to_float32_precision_at_any_scale(tmp_path: Path) -> None:
    """Large weights give logits in the hundreds: both agree to float32 precision of that scale."""
    folder, module = mlp_folder(tmp_path, 64, [256, 256], 10, {}, scale=0.5)
    run = numpy_mlp.load(folder, json.loads((folder / "config.json").read_text()))
    x = np.random.default_rng(1).normal(size=(32, 64)).astype(np.float32)
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    got = run(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(np.abs(want).max()))
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_runtime_serves_the_builtin_mlp_in_numpy_with_torchs_answers(tmp_path: Path) -> None:
    folder, names = digits_like(tmp_path)
    runtime = ArtifactRuntime(folder)
    runtime.load()
    assert runtime.engine == "numpy"
    x = np.random.default_rng(2).uniform(0, 16, size=(50, 64))
    model = load_model(folder)  # the torch path, as a training job or the SDK loads it
    want = [int(v) for v in model(x)]
    assert runtime.run_batch([Prepared(matrix=x)]) == [want]
    records = [dict(zip(names, row, strict=True)) for row in x.tolist()]
    assert runtime.run_batch([Prepared(records=records[:3]), Prepared(matrix=x[3:])]) == [want[:3], want[3:]]
    assert runtime.outputs[0].datatype == "INT64" and runtime.inputs[0].shape == [-1, 64]


def test_regression_and_one_hot_columns_match_the_torch_model(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"size": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", "a", "c"], "y": [1.0, 2.0, 2.5, 4.0]}
    )
    pre = Preprocessor.fit(frame, ["size", "city"])
    sig = {"inputs": [{"name": "size", "dtype": "float64"}, {"name": "city", "dtype": "string"}]}
    config = {
        "task": "tabular-regression",
        "preprocessing": pre.to_config(),
        "signature": sig,
        "target_scale": [2.4, 1.1],
    }
    folder, _ = mlp_folder(tmp_path, pre.width, [8], 1, config, seed=3)
    runtime = ArtifactRuntime(folder)
    runtime.load()
    assert runtime.engine == "numpy"
    rows = [{"size": 1.5, "city": "b"}, {"size": 9.0, "city": "unseen"}]
    (got,) = runtime.run_batch([runtime.prepare(rows)])
    want = load_model(folder)(rows)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert runtime.outputs[0].datatype == "FP64"


def test_the_cnn_still_runs_in_torch(tmp_path: Path) -> None:
    names = [f"p{i}" for i in range(16)]
    pre = Preprocessor(features=names, image_shape=[4, 4], image_norm=[0.0, 1.0])
    sig = {"inputs": [{"name": n, "dtype": "float64"} for n in names]}
    config = {
        "task": "image-classification",
        "preprocessing": pre.to_config(),
        "signature": sig,
        "labels": [0, 1],
    }
    folder = save_builtin(tmp_path, trained_like(CNN([4, 4], 2, hidden=[8]), 4), config)
    runtime = ArtifactRuntime(folder)
    runtime.load()
    assert runtime.engine == "torch"
    x = np.random.default_rng(5).uniform(size=(3, 16))
    assert runtime.run_batch([Prepared(matrix=x)]) == [[int(v) for v in load_model(folder)(x)]]


def test_weights_that_do_not_fit_are_invalid_data(tmp_path: Path) -> None:
    folder, _ = mlp_folder(tmp_path, 4, [8], 2, {"task": "tabular-classification"})
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["hidden"] = [16]
    with pytest.raises(InvalidDataError, match="do not fit"):
        numpy_mlp.load(folder, config)
    config["architecture"]["hidden"] = [8, 8]
    with pytest.raises(InvalidDataError, match="missing"):
        numpy_mlp.load(folder, config)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InvalidDataError, match="cannot read"):
        numpy_mlp.load(folder, json.loads((folder / "config.json").read_text()))
