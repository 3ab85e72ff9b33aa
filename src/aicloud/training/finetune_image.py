"""Transfer learning for images: a pretrained built-in CNN (``zoo/digits-cnn``) adapted to new labels.

:func:`finetune_cnn` rebuilds the base CNN from its ``config.json`` and ``model.safetensors``, replaces
the last layer of its head by a fresh one for the new labels, optionally freezes the convolutional
layers (``freeze``), trains with Adam on the base's preprocessing of the pixel columns, logs
``eval_loss``, ``eval_accuracy`` and ``eval_macro_f1`` per epoch and saves a built-in CNN version (the
base's preprocessing and input signature, the new ``labels``). :func:`train_cnn_from_scratch` trains
the same architecture from random weights on the same rows: the comparison of bench/finetune.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from aicloud.artifacts.architectures import CNN, build_model
from aicloud.artifacts.format import WEIGHTS, save_builtin
from aicloud.artifacts.preprocess import LabelEncoder, Preprocessor
from aicloud.errors import ValidationError
from aicloud.training.class_metrics import classification_metrics
from aicloud.training.loop import NullTracker, Tracker


def _last_linear(model: CNN) -> tuple[nn.Sequential, int]:
    head = model.head
    for i in range(len(head) - 1, -1, -1):
        if isinstance(head[i], nn.Linear):
            return head, i
    raise ValidationError.field("spec.base", "the base CNN's head has no linear layer")


def load_cnn(base: Path, config: dict[str, Any]) -> CNN:
    """The base CNN with its trained weights."""
    from safetensors.torch import load_file

    model = build_model(config["architecture"])
    if not isinstance(model, CNN):
        raise ValidationError.field("spec.base", "the base is not a built-in CNN")
    model.load_state_dict(load_file(str(base / WEIGHTS)))
    return model


def replace_head(model: CNN, classes: int) -> None:
    """A fresh last layer for ``classes`` outputs (the rest of the network keeps its weights)."""
    head, i = _last_linear(model)
    old = head[i]
    assert isinstance(old, nn.Linear)
    head[i] = nn.Linear(old.in_features, classes)
    model.architecture["out_features"] = int(classes)


def _fit(model: CNN, x: torch.Tensor, y: torch.Tensor, xe: torch.Tensor, ye: np.ndarray, epochs: int,
         lr: float, batch_size: int, seed: int, tracker: Tracker,
         log: Callable[[str], None]) -> dict[str, float]:  # fmt: skip
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trained, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.inference_mode():
            metrics = classification_metrics(model(xe).numpy(), ye)
        tracker.log_metric("train_loss", total / len(y), step=epoch)
        for name, value in metrics.items():
            tracker.log_metric(name, value, step=epoch)
        epoch_end = getattr(tracker, "epoch_end", None)
        if epoch_end is not None:
            epoch_end()
        if epoch == epochs or epoch % max(1, epochs // 10) == 0:
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            seconds = time.perf_counter() - t0
            log(f"epoch {epoch}/{epochs} train_loss={total / len(y):.4f} {shown} ({seconds:.2f}s)")
    return metrics


def _data(config: dict[str, Any], train: pd.DataFrame, evaluation: pd.DataFrame, target: str) -> tuple[
        Preprocessor, LabelEncoder, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:  # fmt: skip
    pre = Preprocessor.from_config(config["preprocessing"])
    missing = [c for c in pre.features if c not in train.columns or c not in evaluation.columns]
    if missing or target not in train.columns or target not in evaluation.columns:
        raise ValidationError.field("spec.dataset", f"the data lacks column(s) {(missing or [target])[:5]}")
    labels = LabelEncoder.fit(train[target])
    if len(labels.labels) < 2:
        raise ValidationError.field(
            "spec.target", f"the train data has {len(labels.labels)} class(es); need ≥ 2"
        )
    y, ye = labels.encode(train[target]), labels.encode(evaluation[target])
    evaluation = evaluation[ye >= 0]
    ye = ye[ye >= 0]
    x = torch.from_numpy(pre.transform(train).astype(np.float32))
    xe = torch.from_numpy(pre.transform(evaluation).astype(np.float32))
    return pre, labels, x, torch.from_numpy(y), xe, ye


def finetune_cnn(
    base: Path, config: dict[str, Any], train: pd.DataFrame, evaluation: pd.DataFrame, out: Path, *,
    target: str = "label", epochs: int = 30, lr: float = 0.003, batch_size: int = 16, freeze: bool = False,
    seed: int = 0, base_ref: str = "", tracker: Tracker | None = None, log: Callable[[str], None] = print,
) -> dict[str, float]:  # fmt: skip
    """Fine-tune the base CNN on the new labels and save the version in ``out``; its eval metrics."""
    tracker = tracker or NullTracker()
    pre, labels, x, y, xe, ye = _data(config, train, evaluation, target)
    torch.manual_seed(seed)
    model = load_cnn(base, config)
    replace_head(model, len(labels.labels))
    if freeze:
        for p in model.features.parameters():
            p.requires_grad_(False)
    log(f"transfer: {len(y)} train rows, {len(ye)} eval rows, labels {labels.labels}, "
        f"{'convolutions frozen' if freeze else 'every layer trained'}")  # fmt: skip
    metrics = _fit(model, x, y, xe, ye, epochs, lr, batch_size, seed, tracker, log)
    inputs = ((config.get("signature") or {}).get("inputs")) or []
    out_config = {
        "task": "image-classification",
        "preprocessing": pre.to_config(),
        "signature": {"inputs": inputs, "outputs": [{"name": target, "dtype": str(train[target].dtype)}]},
        "target": target,
        "output": "logits",
        "labels": labels.labels,
        "metrics": {k: (v if np.isfinite(v) else None) for k, v in metrics.items()},
        "finetune": {"base": base_ref, "method": "head" if freeze else "full", "epochs": epochs, "lr": lr,
                     "freeze": freeze},
    }  # fmt: skip
    save_builtin(out, model, out_config)
    return metrics


def train_cnn_from_scratch(
    config: dict[str, Any], train: pd.DataFrame, evaluation: pd.DataFrame, *, target: str = "label",
    epochs: int = 30, lr: float = 0.003, batch_size: int = 16, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """The base's architecture from random weights on the same rows (the baseline of a transfer)."""
    _, labels, x, y, xe, ye = _data(config, train, evaluation, target)
    torch.manual_seed(seed)
    arch = dict(config["architecture"], out_features=len(labels.labels))
    model = build_model(arch)
    assert isinstance(model, CNN)
    return _fit(model, x, y, xe, ye, epochs, lr, batch_size, seed, NullTracker(), lambda _: None)
