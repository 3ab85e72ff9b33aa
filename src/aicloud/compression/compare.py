"""Size, latency and accuracy of a model's variants (the parent and what was derived from it).

For each variant: its size on disk (the model files), the median latency of one call of the model
on prepared inputs at batch 1 and batch 32 (preprocessing excluded, measured in this process after
a warm-up: three interleaved rounds over the variants, the median of the rounds' medians), and, on
an evaluation dataset, the accuracy (classifiers with the target column in the data) or else the
mean cosine similarity of its outputs to the first variant's (the parent). Without a dataset the
examples built from the signature stand in and only the cosine is reported.

Imports torch and ONNX Runtime: it runs in the compression worker, never in the control plane.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.compression.export import EXAMPLE_SEED
from aicloud.errors import ValidationError

BATCHES = (1, 32)
MIN_RUNS = 20
MAX_RUNS = 400
TIME_PER_BATCH_S = 0.2
ROUNDS = 3
EVAL_ROWS = 2000


def feed_batch(features: Any, rows: int) -> Any:
    """The first ``rows`` rows of the model's input (repeated when there are fewer)."""
    if isinstance(features, dict):
        return {k: _take(v, rows) for k, v in features.items()}
    return _take(features, rows)


def _take(x: np.ndarray, rows: int) -> np.ndarray:
    idx = np.arange(rows) % len(x)
    return np.ascontiguousarray(x[idx])


def p50_ms(run: Any, x: Any) -> float:
    """The median wall time of ``run(x)`` in milliseconds, over calls for about TIME_PER_BATCH_S."""
    for _ in range(3):
        run(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MAX_RUNS and (len(times) < MIN_RUNS or time.perf_counter() - start < TIME_PER_BATCH_S):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The mean cosine similarity of each row of ``a`` to the same row of ``b`` (NaN: shapes differ)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        return float("nan")
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)))


def _accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    p, t = np.asarray(predicted), np.asarray(truth)
    try:
        equal = p.astype(np.float64) == t.astype(np.float64)
    except (TypeError, ValueError):
        equal = p.astype(str) == t.astype(str)
    return float(np.mean(equal)) if len(t) else float("nan")


def compare_variants(
    variants: list[dict[str, Any]], dataset: Path | None = None, fmt: str | None = None, threads: int = 1
) -> list[dict[str, Any]]:
    """One row per variant (``{"label", "folder"}``, the parent first): ``size_bytes``,
    ``p50_ms_b1``, ``p50_ms_b32``, ``accuracy`` (or None), ``cosine_to_parent`` (or None), ``runtime``."""
    import torch

    from aicloud.artifacts.loader import load_model
    from aicloud.compression.export import example_feed

    torch.set_num_threads(threads)  # and ONNX Runtime's sessions below: each runtime on `threads` cores

    frame = None
    if dataset is not None:
        from aicloud.training.datasets import read_dataset

        frame, _ = read_dataset(dataset, fmt)
        if len(frame) > EVAL_ROWS:
            frame = frame.sample(EVAL_ROWS, random_state=EXAMPLE_SEED)
        if len(frame) == 0:
            raise ValidationError.field("dataset", "the evaluation dataset has no rows")
    rows: list[dict[str, Any]] = []
    runs: list[tuple[Any, Any]] = []  # (run, features) of each variant
    parent_out: np.ndarray | None = None
    for variant in variants:
        folder = Path(variant["folder"])
        model = load_model(folder, threads=threads)
        features = model.features(frame) if frame is not None else example_feed(folder, model.config)
        outputs = model.run_features(features)
        row: dict[str, Any] = {
            "label": variant["label"],
            "size_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
            "runtime": "torch" if model.module is not None else "onnxruntime",
            "accuracy": None,
            "cosine_to_parent": None,
        }
        target = model.config.get("target")
        if frame is not None and model.is_classifier and target in frame.columns:
            row["accuracy"] = _accuracy(model(frame), frame[str(target)].to_numpy())
        if parent_out is None:
            parent_out = outputs
        else:
            row["cosine_to_parent"] = cosine(parent_out, outputs)
        rows.append(row)
        runs.append((model.run_features, features))
    for batch in BATCHES:  # interleaved rounds: a burst of load elsewhere hits every variant alike
        medians: list[list[float]] = [[] for _ in runs]
        for _ in range(ROUNDS):
            for i, (run, features) in enumerate(runs):
                medians[i].append(p50_ms(run, feed_batch(features, batch)))
        for row, values in zip(rows, medians, strict=True):
            row[f"p50_ms_b{batch}"] = float(np.median(values))
    return rows
