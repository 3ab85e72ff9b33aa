"""Model folders in aicloud's artifact format, made without training: for the serving tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aicloud import Client
from aicloud.artifacts.architectures import CNN, MLP
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


def register(client: Client, folder: Path, name: str) -> str:
    """Register a model folder as the next version of ``name``; returns ``name:version``."""
    files = {p.name: client.blobs.upload(p.read_bytes()) for p in sorted(folder.iterdir())}
    config = json.loads((folder / "config.json").read_text())
    out = client.models.register_version(
        name, files, signature=config.get("signature") or {}, config=config, metrics={"accuracy": 0.9}
    )
    return f"{name}:{out['version']}"


def pixel_rows(names: list[str], n: int, seed: int) -> pd.DataFrame:
    """Rows of the digits-like models' inputs (their preprocessing standardizes them), and a label."""
    rng = np.random.default_rng(seed)
    means = np.array([i % 7 for i in range(len(names))], dtype=float)
    frame = pd.DataFrame(rng.normal(means, 1.5, (n, len(names))), columns=names)
    frame["label"] = rng.integers(0, 10, n)
    return frame


def digits_cnn(folder: Path) -> Path:
    """The digits-like model's config (64 standardized pixels → 10 labels) on the built-in CNN."""
    mlp, _ = digits_like(folder / "template")
    config = json.loads((mlp / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("format", "architecture")}
    config["task"] = "image-classification"
    return save_builtin(folder / "cnn", trained_like(CNN([8, 8], 10, hidden=[32]), seed=3), config)
