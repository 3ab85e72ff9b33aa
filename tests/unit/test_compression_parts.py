"""Compression's pure parts: the reduce_range choice from CPU flags, the Gemm → MatMul rewrite that
dynamic quantization needs, the export's example inputs and difference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from aicloud.compression.export import example_inputs, max_abs_diff
from aicloud.compression.quantize import choose_reduce_range, cpu_flags, gemm_as_matmul


def test_reduce_range_follows_vnni() -> None:
    assert choose_reduce_range({"sse4_2", "avx2", "fma"})[0] is True  # AVX2 without VNNI
    assert choose_reduce_range({"avx2", "avx512f", "avx512_vnni"})[0] is False
    assert choose_reduce_range({"avx2", "avx_vnni"})[0] is False
    assert choose_reduce_range({"fp", "asimd", "asimddp"})[0] is False  # not x86
    reduce, why = choose_reduce_range(set())
    assert reduce is False and why


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(str(tmp_path / "none")) == set()


def test_gemm_becomes_matmul_and_add_with_the_same_outputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 5)).astype(np.float32)  # (out, in): torch's Linear, transB=1
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    src, dst = tmp_path / "gemm.onnx", tmp_path / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    assert gemm_as_matmul(src, dst) == 1
    model = onnx.load(str(dst))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    assert {i.name for i in model.graph.initializer} == {"w_matmul", "b"}
    x = rng.standard_normal((4, 5)).astype(np.float32)
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w.T + b, rtol=1e-5, atol=1e-5)


def test_examples_and_differences() -> None:
    mlp = {"architecture": {"type": "mlp", "in_features": 7, "hidden": [4], "out_features": 2}}
    cnn = {"architecture": {"type": "cnn", "image_shape": [1, 8, 8], "out_features": 10}}
    assert example_inputs(mlp).shape == (32, 7) and example_inputs(mlp).dtype == np.float32
    assert example_inputs(cnn, rows=3).shape == (3, 64)
    np.testing.assert_array_equal(example_inputs(mlp), example_inputs(mlp))  # fixed seed
    a = np.zeros((2, 3), dtype=np.float32)
    assert max_abs_diff(a, a + 0.5) == 0.5
    assert max_abs_diff(a, np.zeros((3, 2))) == math.inf
    assert math.isnan(max_abs_diff(a, a * np.nan))


def test_export_and_a_session_of_one_thread(tmp_path: Path) -> None:
    from aicloud.artifacts.architectures import MLP
    from aicloud.artifacts.format import save_builtin
    from aicloud.artifacts.loader import load_model
    from aicloud.compression.export import export_onnx

    torch.manual_seed(0)
    save_builtin(tmp_path / "mlp", MLP(7, [16], 3), {"task": "tabular-classification"})
    report = export_onnx(tmp_path / "mlp", tmp_path / "onnx", derived={"from": "m:1", "method": "onnx"})
    assert report["max_abs_diff"] <= 1e-4 and report["examples"] == 32
    x = example_inputs({"architecture": {"type": "mlp", "in_features": 7}}, rows=5)
    default, single = load_model(tmp_path / "onnx"), load_model(tmp_path / "onnx", threads=1)
    assert single.config["derived"] == {"from": "m:1", "method": "onnx"}
    np.testing.assert_array_equal(default.run_features(x), single.run_features(x))
    np.testing.assert_allclose(
        single.run_features(x), load_model(tmp_path / "mlp").run_features(x), atol=1e-5
    )


def _dead_units(module: torch.nn.Module) -> torch.nn.Module:
    """Zero the weights and bias of every other unit of each hidden layer: those units output
    nothing (ReLU(0) = 0, or a zero channel), so removing exactly them changes no output."""
    from aicloud.compression.prune import _layers

    with torch.no_grad():
        for layer in _layers(module)[:-1]:
            layer.weight[1::2] = 0
            layer.bias[1::2] = 0
    return module.eval()


def test_structured_pruning_removes_units_and_keeps_the_function() -> None:
    from aicloud.artifacts.architectures import CNN, MLP
    from aicloud.compression.prune import parameter_count, shrink

    torch.manual_seed(0)
    for module, x in (
        (MLP(12, [32, 16], 4), torch.randn(9, 12)),
        (CNN([8, 8], 10, hidden=[24], channels=(8, 16)), torch.randn(5, 64)),
    ):
        module = _dead_units(module)
        same = shrink(module, 0.0)
        torch.testing.assert_close(same(x), module(x))
        smaller = shrink(module, 0.5)
        assert smaller.architecture["hidden"] == [h // 2 for h in module.architecture["hidden"]]
        if "channels" in module.architecture:
            assert smaller.architecture["channels"] == [4, 8]
        assert parameter_count(smaller) < 0.4 * parameter_count(module)
        torch.testing.assert_close(smaller(x), module(x), rtol=1e-5, atol=1e-5)  # only dead units went
