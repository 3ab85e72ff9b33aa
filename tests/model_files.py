"""Model folders in aicloud's artifact format, made without training: for the serving tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aicloud.artifacts.architectures import MLP
from aicloud.artifacts.format import save_builtin
from aicloud.artifacts.preprocess import Preprocessor


def trained_like(module: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Random weights of about a trained model's scale (logits of a few units), not the init's."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module.eval()


def mlp_folder(
    folder: Path,
    width: int,
    hidden: list[int],
    out: int,
    config: dict[str, Any],
    seed: int = 0,
    scale: float = 0.1,
) -> tuple[Path, torch.nn.Module]:
    """A built-in MLP saved to ``folder`` with ``config``: (the folder, the module)."""
    module = trained_like(MLP(width, hidden, out, dropout=0.3), seed, scale)
    return save_builtin(folder, module, config), module


def digits_like(folder: Path) -> tuple[Path, list[str]]:
    """A digits-shaped classifier (64 standardized pixels → 10 labels): (its folder, the feature names)."""
    names = [f"pixel_{i}" for i in range(64)]
    pre = Preprocessor(
        features=names, standardize={n: [float(i % 7), 1.0 + i % 3] for i, n in enumerate(names)}
    )
    sig = {"inputs": [{"name": n, "dtype": "float64"} for n in names], "outputs": [{"name": "label"}]}
    config = {
        "task": "tabular-classification",
        "preprocessing": pre.to_config(),
        "signature": sig,
        "labels": list(range(10)),
    }
    return mlp_folder(folder, 64, [256, 256], 10, config)[0], names
