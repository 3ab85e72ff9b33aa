"""``runtime: auto``'s choice (aicloud.serving.runtimes.choose): a pure function of the measurements
and the tolerance; and which runtimes can serve a version (aicloud.artifacts.runtimes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from aicloud.artifacts.format import read_config
from aicloud.artifacts.runtimes import check_runtime, default_runtime, reference_of, runnable
from aicloud.errors import ValidationError
from aicloud.serving import runtimes
from aicloud.serving.runtimes import Measured, choose

from model_files import digits_like, mlp_folder


def m(runtime: str, b1: float, bn: float, diff: float = 0.0) -> Measured:
    return Measured(runtime, b1, bn, diff, batch=32)


def test_the_fastest_within_the_tolerance_wins_and_the_reason_names_every_measurement() -> None:
    choice = choose([m("torch", 0.09, 0.7), m("onnxruntime", 0.02, 0.19, 2e-6)], "torch")
    assert choice.runtime == "onnxruntime"
    assert choice.reason == (
        "auto: fastest of those matching torch within 0.0001 "
        "(p50 b1/b32: onnxruntime 0.02/0.19 ms, torch 0.09/0.7 ms)"
    )
    assert choice.line.startswith("onnxruntime (auto: ")


def test_a_faster_runtime_whose_outputs_differ_is_refused_and_said_so() -> None:
    choice = choose([m("torch", 0.09, 0.7), m("onnxruntime", 0.02, 0.19, 3e-3)], "torch")
    assert choice.runtime == "torch"
    assert "onnxruntime 0.02/0.19 ms (refused: differs by 0.003)" in choice.reason
    # NaN or infinite differences (a runtime that failed the comparison) are refused too
    assert choose([m("torch", 1, 1), m("numpy", 0.1, 0.1, math.inf)], "torch").runtime == "torch"
    assert choose([m("torch", 1, 1), m("numpy", 0.1, 0.1, math.nan)], "torch").runtime == "torch"


def test_the_cost_is_a_lone_request_plus_a_full_batch() -> None:
    # numpy is faster alone, onnxruntime on a full batch: the sum decides
    measured = [m("torch", 0.05, 0.2), m("numpy", 0.01, 0.09), m("onnxruntime", 0.012, 0.06)]
    assert choose(measured, "torch").runtime == "onnxruntime"
    assert choose(measured, "torch", tolerance=0.0).runtime == "onnxruntime"  # differences of 0
    # a tie goes to the reference
    assert choose([m("numpy", 0.1, 0.1), m("torch", 0.1, 0.1)], "torch").runtime == "torch"


def test_the_tolerance_is_inclusive_and_the_reference_is_required() -> None:
    measured = [m("torch", 1, 1), m("onnxruntime", 0.5, 0.5, 1e-4)]
    assert choose(measured, "torch", tolerance=1e-4).runtime == "onnxruntime"
    assert choose(measured, "torch", tolerance=5e-5).runtime == "torch"
    single = choose([m("onnxruntime", 0.02, 0.2)], "onnxruntime")
    assert single.runtime == "onnxruntime" and "the only runtime that can serve it" in single.reason
    with pytest.raises(ValueError, match="reference"):
        choose([m("numpy", 1, 1)], "torch")


MLP = {"architecture": {"type": "mlp", "in_features": 4, "hidden": [], "out_features": 2}}
CNN = {"architecture": {"type": "cnn", "image_shape": [8, 8]}}
ONNX = {"architecture": {"type": "onnx"}}


def test_which_runtimes_can_serve_a_version() -> None:
    weights = ["config.json", "model.safetensors"]
    assert runnable(MLP, weights) == {"numpy": None, "onnxruntime": None, "torch": None}
    assert runnable(CNN, weights)["numpy"] == "numpy runs only the built-in MLP (safetensors weights)"
    onnx = runnable(ONNX, ["config.json", "model.onnx"])
    assert onnx["onnxruntime"] is None and "torch cannot run it" in str(onnx["torch"])
    assert all(runnable(MLP, ["config.json"]).values())  # no weights: nothing can
    assert (reference_of(MLP, weights), default_runtime(MLP, weights)) == ("torch", "numpy")
    assert (reference_of(CNN, weights), default_runtime(CNN, weights)) == ("torch", "torch")
    assert default_runtime(ONNX, ["model.onnx"]) == "onnxruntime"
    for runtime in (None, "auto", "torch", "onnxruntime"):
        check_runtime(runtime, CNN, weights)
    with pytest.raises(ValidationError) as refused:
        check_runtime("torch", ONNX, ["model.onnx"])
    assert refused.value.details[0]["field"] == "runtime"


def test_runtimes_that_failed_are_named_in_the_reason() -> None:
    choice = choose([m("torch", 1, 1)], "torch", failed={"onnxruntime": "RuntimeError: no Conv3d"})
    assert choice.runtime == "torch"
    assert choice.reason.endswith("; onnxruntime failed: RuntimeError: no Conv3d")


def test_auto_leaves_out_a_runtime_that_cannot_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = digits_like(tmp_path / "mlp")
    real = runtimes.load_runner

    def load_runner(runtime: str, *args: Any) -> Any:
        if runtime == "onnxruntime":
            raise RuntimeError("the exporter does not know this layer\nsecond line")
        return real(runtime, *args)

    monkeypatch.setattr(runtimes, "load_runner", load_runner)
    run, choice = runtimes.select("auto", folder, read_config(folder), threads=1)
    assert choice.runtime in ("numpy", "torch")
    assert [m.runtime for m in choice.measured] == ["numpy", "torch"]
    assert choice.reason.endswith("; onnxruntime failed: RuntimeError: the exporter does not know this layer")
    x = runtimes.example_features(read_config(folder), 4)
    assert run(x).shape == (4, 10)


def test_an_onnx_export_that_diverges_is_refused_explicitly_and_left_out_by_auto(tmp_path: Path) -> None:
    # weights of scale 10: logits of about 1e4, where float32 sums in another order differ by > 1e-4;
    # odd layer widths put part of each sum in the kernels' tails, so the two runtimes' orders differ on
    # every instruction set (at widths of 256 an AVX-512 CPU gave both the same order: no difference)
    folder, _ = mlp_folder(
        tmp_path / "big", 64, [1021, 1019], 10, {"task": "tabular-classification"}, scale=10.0
    )
    config = read_config(folder)
    with pytest.raises(ValidationError, match="the ONNX export of this version differs from it by up to"):
        runtimes.select("onnxruntime", folder, config, threads=1)
    _, choice = runtimes.select("auto", folder, config, threads=1)
    assert choice.runtime in ("torch", "numpy")
    assert "; onnxruntime failed: ValidationError" in choice.reason
