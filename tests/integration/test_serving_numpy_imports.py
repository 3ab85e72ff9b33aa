"""A fresh interpreter serving the built-in MLP in numpy never imports torch (or pandas)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from aicloud.artifacts.architectures import MLP
from aicloud.artifacts.format import save_builtin
from aicloud.artifacts.preprocess import Preprocessor


def _trained_like(module: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Random weights of about a trained model's scale (logits of a few units), not the init's."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module.eval()


def _mlp_folder(
    folder: Path,
    width: int,
    hidden: list[int],
    out: int,
    config: dict[str, Any],
    seed: int = 0,
    scale: float = 0.1,
) -> tuple[Path, torch.nn.Module]:
    module = _trained_like(MLP(width, hidden, out, dropout=0.3), seed, scale)
    return save_builtin(folder, module, config), module


def _digits_like(folder: Path) -> tuple[Path, list[str]]:
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
    return _mlp_folder(folder, 64, [256, 256], 10, config)[0], names


def test_serving_the_mlp_never_imports_torch(tmp_path: Path) -> None:
    folder, _ = _digits_like(tmp_path)
    code = (
        "import sys\n"
        "from aicloud.serving.app import ReplicaConfig, build_app\n"
        "from aicloud.serving.runtime import ArtifactRuntime\n"
        f"app = build_app(ReplicaConfig(key='k'), runtime=ArtifactRuntime({str(folder)!r}), start=True)\n"
        "assert app.runtime.engine == 'numpy'\n"
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
