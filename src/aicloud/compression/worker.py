"""The compression worker: ``python -m aicloud.compression.worker REQUEST.json``.

Started by :mod:`aicloud.compression.runner` in the workload sandbox, in a private working folder
that holds the request and the model files the control plane put there. It runs one operation
(``export``, ``quantize``, ``prune``, ``compare``; ``zoo``: a zoo entry's model, docs/zoo.md),
writes ``result.json`` next to the request
(``{"result": ...}`` or ``{"error": {"code", "message", "details"}}``, never a traceback) and
writes its output model, if any, to the request's ``out`` folder. Its log (stdout and stderr) is
``worker.log``; the runner shows its tail when the worker dies.
"""

from __future__ import annotations

import json
import shutil
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.artifacts.format import CONFIG, read_config
from aicloud.errors import AicloudError, InvalidDataError

RESULT = "result.json"


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / CONFIG).write_text(json.dumps(config, indent=1, allow_nan=False) + "\n")


def _agreement(parent: Path, variant: Path, feed: Any) -> dict[str, Any]:
    """How the variant's outputs compare with the parent's on ``feed``: the largest absolute
    difference and, for a classifier, the share of rows whose top class is the same, else (an
    encoder, a regressor) the mean cosine similarity of each row's outputs."""
    from aicloud.artifacts.loader import load_model
    from aicloud.artifacts.onnxrt import max_abs_diff

    a = load_model(parent)
    b = load_model(variant)
    out_a, out_b = a.run_features(feed), b.run_features(feed)
    report: dict[str, Any] = {"max_abs_diff": max_abs_diff(out_a, out_b)}
    if a.is_classifier and out_a.ndim == 2 and out_a.shape == out_b.shape:
        report["top1_agreement"] = float(np.mean(out_a.argmax(axis=1) == out_b.argmax(axis=1)))
    elif out_a.shape == out_b.shape and len(out_a):
        from aicloud.compression.compare import cosine

        report["cosine"] = cosine(out_a, out_b)
    return report


def export(req: dict[str, Any]) -> dict[str, Any]:
    from aicloud.compression.export import export_onnx

    return export_onnx(
        Path(req["parent"]), Path(req["out"]), tolerance=float(req["tolerance"]), derived=req.get("derived")
    )


def quantize(req: dict[str, Any]) -> dict[str, Any]:
    from aicloud.artifacts.loader import load_model
    from aicloud.compression.export import example_feed, export_onnx, is_onnx
    from aicloud.compression.quantize import CALIBRATION_ROWS, quantize_onnx

    parent, out = Path(req["parent"]), Path(req["out"])
    config = read_config(parent)
    report: dict[str, Any] = {}
    source = parent
    if not is_onnx(parent, config):  # a built-in model: export it first (checked as `export` is)
        source = out.parent / "onnx"
        report["export"] = export_onnx(parent, source)
    calibration = None
    if req.get("calibration"):
        from aicloud.training.datasets import read_dataset

        frame, _ = read_dataset(req["calibration"]["path"], req["calibration"].get("format"))
        if len(frame) > CALIBRATION_ROWS:
            frame = frame.sample(CALIBRATION_ROWS, random_state=0)
        features = load_model(parent).features(frame)
        if isinstance(features, Mapping):
            raise InvalidDataError("static-int8 calibration supports models of one input tensor")
        calibration = features
    report["quantization"] = quantize_onnx(source, out, req["method"], calibration)
    cfg = {k: v for k, v in read_config(source).items()}
    cfg.pop("derived", None)
    if req.get("derived"):
        cfg["derived"] = req["derived"]
    cfg["quantization"] = report["quantization"]
    _write_config(out, cfg)
    report["check"] = _agreement(parent, out, example_feed(parent, config))
    if source is not parent:
        shutil.rmtree(source, ignore_errors=True)
    return report


def prune(req: dict[str, Any]) -> dict[str, Any]:
    from aicloud.compression.export import example_feed
    from aicloud.compression.prune import prune_builtin

    parent, out = Path(req["parent"]), Path(req["out"])
    report = prune_builtin(
        parent,
        out,
        amount=float(req["amount"]),
        finetune_epochs=int(req.get("finetune_epochs") or 0),
        data=req.get("data"),
        derived=req.get("derived"),
    )
    report["check"] = _agreement(parent, out, example_feed(parent, read_config(parent)))
    return report


def compare(req: dict[str, Any]) -> dict[str, Any]:
    from aicloud.compression.compare import compare_variants

    dataset = req.get("dataset")
    rows = compare_variants(
        req["variants"],
        Path(dataset["path"]) if dataset else None,
        dataset.get("format") if dataset else None,
        threads=int(req.get("threads") or 1),
    )
    return {"variants": rows}


def zoo(req: dict[str, Any]) -> dict[str, Any]:
    """Build a zoo entry's model folder (``convert`` entries, docs/zoo.md) into ``out``."""
    entry = req.get("entry") or {}
    if entry.get("build", {}).get("op") == "minilm":
        from aicloud.zoo.minilm import build

        return build(Path(req["out"]), entry)
    raise InvalidDataError(f"no zoo converter {entry.get('build', {}).get('op')!r}")


def embed_index(req: dict[str, Any]) -> dict[str, Any]:
    """Semantic search (docs/zoo.md): embed a dataset's text column into an index folder."""
    from aicloud.zoo.search import build_index

    return build_index(req)


def embed_search(req: dict[str, Any]) -> dict[str, Any]:
    from aicloud.zoo.search import search

    return search(req)


OPS = {
    "export": export,
    "quantize": quantize,
    "prune": prune,
    "compare": compare,
    "zoo": zoo,
    "embed_index": embed_index,
    "embed_search": embed_search,
}


def main(argv: list[str]) -> int:
    request_path = Path(argv[1])
    result_path = request_path.with_name(RESULT)
    try:
        req = json.loads(request_path.read_text())
        op = OPS.get(str(req.get("op")))
        if op is None:
            raise InvalidDataError(f"unknown operation {req.get('op')!r}")
        body: dict[str, Any] = {"result": op(req)}
    except AicloudError as exc:
        body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
    except Exception as exc:  # a bug or a model the libraries cannot handle: the log has the traceback
        traceback.print_exc()
        body = {"error": {"code": "invalid_data", "message": f"{type(exc).__name__}: {exc}", "details": None}}
    result_path.write_text(json.dumps(body, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
