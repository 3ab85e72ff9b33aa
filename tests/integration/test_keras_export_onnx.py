"""export_keras (aicloud.artifacts.keras_export; docs/keras.md) on real Keras 3 models, torch backend:
input names and free axes in the signature, several inputs, the check against model.predict, and
the refusals. In-process, no server."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aicloud.errors import ValidationError

if importlib.util.find_spec("keras") is None:
    pytest.skip("pip install 'aicloud[keras]'", allow_module_level=True)
os.environ.setdefault("KERAS_BACKEND", "torch")

keras = pytest.importorskip("keras")

from aicloud.artifacts.format import read_config  # noqa: E402
from aicloud.artifacts.keras_export import export_keras  # noqa: E402
from aicloud.artifacts.loader import load_model  # noqa: E402


def _two_inputs(as_dict: bool) -> Any:
    num = keras.Input(shape=(3,), name="num")
    extra = keras.Input(shape=(2,), name="extra")
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([num, keras.layers.Dense(4)(extra)]))
    return keras.Model({"num": num, "extra": extra} if as_dict else [num, extra], out)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2's copy= in Keras' tree code
@pytest.mark.parametrize("as_dict", [False, True])
def test_several_inputs_keep_their_names(tmp_path: Path, as_dict: bool) -> None:
    model = _two_inputs(as_dict)
    config = export_keras(model, tmp_path)
    inputs = {t["name"]: t for t in config["signature"]["inputs"]}
    assert inputs == {
        "num": {"name": "num", "dtype": "float32", "shape": [-1, 3]},
        "extra": {"name": "extra", "dtype": "float32", "shape": [-1, 2]},
    }
    assert read_config(tmp_path) == config and not (tmp_path / "model.safetensors").exists()
    rng = np.random.default_rng(1)
    feed = {
        "num": rng.normal(size=(5, 3)).astype("float32"),
        "extra": rng.normal(size=(5, 2)).astype("float32"),
    }
    want = model.predict(feed if as_dict else [feed["num"], feed["extra"]], verbose=0)
    got = np.asarray(load_model(tmp_path)(feed))
    assert got.shape == (5, 1) and np.abs(got - want).max() < 1e-4


def test_an_unbuilt_model_needs_an_example(tmp_path: Path) -> None:
    model = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(1)])
    with pytest.raises(ValidationError, match="example_input"):
        export_keras(model, tmp_path)
    assert not (tmp_path / "model.onnx").exists()
    config = export_keras(model, tmp_path, np.ones((1, 4), "float32"))  # one row: checked on two
    assert config["signature"]["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 4]}]
    assert config["framework"] == {"name": "keras", "version": keras.__version__, "backend": "torch"}


def test_an_example_of_another_shape_is_refused(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
    with pytest.raises(ValidationError, match=r"expected shape \[None, 4\]"):
        export_keras(model, tmp_path, np.ones((2, 5), "float32"))


def test_an_export_that_does_not_match_predict_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    real = model.predict
    monkeypatch.setattr(model, "predict", lambda x, verbose=0: real(x, verbose=verbose) + 0.5)
    with pytest.raises(ValidationError, match=r"differs from model\.predict by up to 0\.5") as err:
        export_keras(model, tmp_path)
    assert err.value.details["max_abs_diff"] == pytest.approx(0.5)
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "config.json").exists()


def test_not_a_keras_model(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a Keras model"):
        export_keras(object(), tmp_path)
