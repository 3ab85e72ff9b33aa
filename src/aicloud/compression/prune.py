"""Structured pruning of a built-in model: whole hidden units and convolution channels are removed,
so the layers really shrink (a mask alone speeds nothing up), then a short fine-tune.

:func:`shrink` ranks the output units of every layer but the last (rows of a Linear's weight,
filters of a Conv2d) by the L2 norm of their weights, as ``torch.nn.utils.prune.ln_structured`` does,
keeps the strongest ``1 - amount`` of each (at least one), and builds the smaller architecture with
the kept weights: the next layer loses the matching inputs (for the CNN's first head layer, the
flattened positions of a removed channel). The input and output widths do not change, so the
model's preprocessing, labels and signature stay valid. :func:`finetune` then trains the smaller
model for a few epochs on the version's training data, preprocessed as the model does.

Imports torch: it runs in the compression worker, never in the control plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aicloud.artifacts.architectures import build_model
from aicloud.artifacts.format import read_config, save_builtin
from aicloud.errors import ValidationError

FINETUNE_LR = 1e-3
FINETUNE_BATCH = 64
SEED = 0


def _layers(module: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def shrink(module: nn.Module, amount: float) -> nn.Module:
    """A smaller built-in module: ``amount`` (0 ≤ amount < 1) of each hidden layer's units removed."""
    architecture = getattr(module, "architecture", None)
    if not isinstance(architecture, dict) or architecture.get("type") not in ("mlp", "cnn"):
        raise ValidationError.field("model", "structured pruning needs a built-in MLP or CNN")
    layers = _layers(module)
    keeps: list[torch.Tensor] = []
    for layer in layers[:-1]:
        weight = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        k = max(1, round(weight.shape[0] * (1.0 - amount)))
        keeps.append(torch.argsort(weight.norm(dim=1), descending=True)[:k].sort().values)
    arch = dict(architecture)
    convs = sum(isinstance(m, nn.Conv2d) for m in layers)
    if arch["type"] == "cnn":
        arch["channels"] = [len(k) for k in keeps[:convs]]
    arch["hidden"] = [len(k) for k in keeps[convs:]]
    smaller = build_model(arch)
    previous: torch.Tensor | None = None  # the kept inputs of the current layer
    for i, (old, new) in enumerate(zip(layers, _layers(smaller), strict=True)):
        weight, bias = old.weight.detach(), old.bias.detach() if old.bias is not None else None
        if i < len(keeps):
            weight = weight[keeps[i]]
            bias = bias[keeps[i]] if bias is not None else None
        if previous is not None:
            before = layers[i - 1]
            if isinstance(old, nn.Linear) and isinstance(before, nn.Conv2d):  # flattened channels
                spatial = old.in_features // before.out_channels
                previous = (previous[:, None] * spatial + torch.arange(spatial)).reshape(-1)
            weight = weight[:, previous]
        new.weight.copy_(weight)
        if bias is not None and new.bias is not None:
            new.bias.copy_(bias)
        previous = keeps[i] if i < len(keeps) else None
    return smaller.eval()


def finetune(module: nn.Module, x: np.ndarray, y: np.ndarray, classify: bool, epochs: int) -> list[float]:
    """Train ``module`` for ``epochs`` on (x, y) (Adam, mini-batches, a fixed seed); the mean loss of
    each epoch."""
    gen = torch.Generator().manual_seed(SEED)
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ys = torch.from_numpy(y.astype(np.int64) if classify else y.astype(np.float32).reshape(-1, 1))
    loss_fn: nn.Module = nn.CrossEntropyLoss(ignore_index=-1) if classify else nn.MSELoss()
    optimizer = torch.optim.Adam(module.parameters(), lr=FINETUNE_LR)
    losses: list[float] = []
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        total = 0.0
        for start in range(0, len(xs), FINETUNE_BATCH):
            idx = order[start : start + FINETUNE_BATCH]
            optimizer.zero_grad()
            loss = loss_fn(module(xs[idx]), ys[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(1, len(xs)))
    return losses


def prune_builtin(
    parent: Path,
    out: Path,
    *,
    amount: float,
    finetune_epochs: int,
    data: dict[str, Any] | None = None,
    derived: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the pruned (and fine-tuned) model of ``parent`` to ``out``; returns what was done."""
    from aicloud.artifacts.loader import load_model
    from aicloud.artifacts.preprocess import TargetScaler
    from aicloud.compression.export import is_onnx

    config = read_config(parent)
    if is_onnx(parent, config):
        raise ValidationError.field(
            "model", "an ONNX model cannot be pruned here; prune the built-in version it was exported from"
        )
    model = load_model(parent)
    assert model.module is not None
    smaller = shrink(model.module, amount)
    report: dict[str, Any] = {
        "amount": amount,
        "structured": True,
        "parameters_before": parameter_count(model.module),
        "parameters_after": parameter_count(smaller),
        "architecture": dict(smaller.architecture),  # type: ignore[arg-type]
    }
    if finetune_epochs > 0:
        if data is None:
            raise ValidationError.field("dataset", "fine-tuning needs the training data")
        from aicloud.training.datasets import read_dataset

        frame, _ = read_dataset(data["path"], data.get("format"))
        target = str(config.get("target") or "")
        if target not in frame.columns:
            raise ValidationError.field("dataset", f"the training data has no target column {target!r}")
        x = model.features(frame)
        assert isinstance(x, np.ndarray)
        if model.labels is not None:
            y = model.labels.encode(frame[target])
        elif config.get("target_scale"):
            mean, std = config["target_scale"]
            y = TargetScaler(float(mean), float(std)).encode(frame[target])
            keep = np.isfinite(y)
            x, y = x[keep], y[keep]
        else:
            raise ValidationError.field(
                "model", "fine-tuning needs a model of the built-in tasks (labels or a target scale)"
            )
        torch.manual_seed(SEED)
        report["finetune_losses"] = finetune(smaller, x, y, model.labels is not None, finetune_epochs)
        report["finetune_rows"] = len(x)
        smaller.eval()
    cfg = {k: v for k, v in config.items() if k not in ("format", "architecture")}
    if derived:
        cfg["derived"] = derived
    cfg["pruning"] = {k: v for k, v in report.items() if k != "architecture"}
    save_builtin(out, smaller, cfg)
    return report
