"""Int8 quantization of an ONNX model with ``onnxruntime.quantization``.

* ``dynamic-int8``: weights quantized ahead of time (int8, per output channel), activations at run
  time (``quantize_dynamic``); needs no data. ONNX Runtime's dynamic quantization covers MatMul and
  Conv but not Gemm, which is how torch exports ``nn.Linear``: :func:`gemm_as_matmul` first rewrites
  each Gemm into a MatMul and an Add (the same arithmetic).
* ``static-int8``: weights and activations quantized ahead of time (QDQ format, activations uint8,
  weights int8 per channel), the activations' ranges measured by running the model on a calibration
  dataset (``quantize_static``, MinMax).

``reduce_range`` (7-bit weights) is chosen here, at run time: True on an x86 CPU without VNNI, where
the u8-by-s8 multiply-add of AVX2/AVX-512 can saturate with full 8-bit ranges, False with VNNI
(``avx512_vnni`` or ``avx_vnni`` among the CPU flags in ``/proc/cpuinfo``) and on other CPUs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.artifacts.format import ONNX
from aicloud.errors import ValidationError

METHODS = ("dynamic-int8", "static-int8")
CALIBRATION_ROWS = 256
CALIBRATION_BATCH = 32
_VNNI = ("avx512_vnni", "avx_vnni")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``); empty where they cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def choose_reduce_range(flags: set[str] | None = None) -> tuple[bool, str]:
    """(``reduce_range``, why): True on an x86 CPU with AVX2 or AVX-512 but no VNNI."""
    flags = cpu_flags() if flags is None else flags
    vnni = sorted(f for f in _VNNI if f in flags)
    if vnni:
        return False, f"the CPU has VNNI ({', '.join(vnni)}): full 8-bit weights"
    if "avx2" in flags or "avx512f" in flags:
        return True, "x86 CPU without VNNI: 7-bit weights, so u8-by-s8 products cannot saturate"
    return False, "no x86 AVX2/AVX-512 flags: full 8-bit weights"


def gemm_as_matmul(src: Path, dst: Path) -> int:
    """Copy the ONNX model ``src`` to ``dst`` with each Gemm (``alpha = beta = 1``, ``transA = 0``,
    constant B) rewritten as MatMul (+ Add of C); returns how many were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        )
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(
                helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_add")
            )
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    onnx.save(model, str(dst))
    return rewritten


class _Calibration:
    """``onnxruntime.quantization.CalibrationDataReader`` over an array of model inputs."""

    def __init__(self, input_name: str, x: np.ndarray) -> None:
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(
            [x[i : i + CALIBRATION_BATCH] for i in range(0, len(x), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:  # not needed by MinMax; part of the reader's interface
        pass


def quantize_onnx(src: Path, out: Path, method: str, calibration: np.ndarray | None = None) -> dict[str, Any]:
    """Write the int8 model of ``src/model.onnx`` to ``out/model.onnx``; returns the settings used.

    ``calibration``: model inputs (preprocessed rows), needed by ``static-int8``.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if method not in METHODS:
        raise ValidationError.field(
            "method", f"unknown method {method!r}; expected one of {', '.join(METHODS)}"
        )
    reduce_range, why = choose_reduce_range()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    work.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "method": method,
        "per_channel": True,
        "reduce_range": reduce_range,
        "reduce_range_reason": why,
        "onnxruntime": ort.__version__,
    }
    try:
        if method == "dynamic-int8":
            plain = work / "matmul.onnx"
            settings["gemm_rewritten"] = gemm_as_matmul(src / ONNX, plain)
            quantize_dynamic(
                plain, out / ONNX, per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8
            )
        else:
            if calibration is None or len(calibration) == 0:
                raise ValidationError.field(
                    "calibration", "static-int8 needs a calibration dataset with rows"
                )
            session = ort.InferenceSession(str(src / ONNX), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            del session
            quantize_static(
                src / ONNX,
                out / ONNX,
                _Calibration(name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
            settings["calibration_rows"] = len(calibration)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return settings
