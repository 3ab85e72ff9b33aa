"""The built-in architectures of the model artifact: an MLP for tables and a small CNN for images.

Each module records its constructor arguments in ``.architecture`` (a JSON-safe dict with a ``type``),
which is what ``config.json`` stores; :func:`build_model` rebuilds the module from it, so a saved model
is weights (safetensors) plus JSON and loading never runs code from the artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from aicloud.errors import InvalidDataError


def _head(in_features: int, hidden: Sequence[int], out_features: int, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, int(size)), nn.ReLU(), nn.Dropout(dropout)]
        width = int(size)
    layers.append(nn.Linear(width, out_features))
    return layers


class MLP(nn.Module):
    """Fully connected layers with ReLU and dropout: ``in → hidden... → out``."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0):
        super().__init__()
        self.architecture: dict[str, Any] = {
            "type": "mlp",
            "in_features": int(in_features),
            "hidden": [int(h) for h in hidden],
            "out_features": int(out_features),
            "dropout": float(dropout),
        }
        self.net = nn.Sequential(*_head(in_features, hidden, out_features, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """conv3x3(16) → ReLU → conv3x3(32) → ReLU → max-pool 2 → (avg-pool to ≤ 8x8) → MLP head.

    Input: ``(N, C, H, W)``, or ``(N, C·H·W)`` flat pixels, reshaped here.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.0,
        channels: Sequence[int] = (16, 32),
    ):
        super().__init__()
        shape = [int(s) for s in image_shape]
        if len(shape) == 2:
            shape = [1, *shape]
        if len(shape) != 3 or min(shape) < 1:
            raise InvalidDataError(f"a CNN needs an image shape [H, W] or [C, H, W], got {list(image_shape)}")
        c, h, w = shape
        self.architecture: dict[str, Any] = {
            "type": "cnn",
            "image_shape": shape,
            "out_features": int(out_features),
            "hidden": [int(x) for x in hidden],
            "dropout": float(dropout),
            "channels": [int(x) for x in channels],
        }
        self.shape = (c, h, w)
        layers: list[nn.Module] = []
        width = c
        for ch in channels:
            layers += [nn.Conv2d(width, int(ch), kernel_size=3, padding=1), nn.ReLU()]
            width = int(ch)
        ph, pw = h, w
        if h >= 2 and w >= 2:
            layers.append(nn.MaxPool2d(2))
            ph, pw = h // 2, w // 2
        if ph > 8 or pw > 8:
            ph, pw = min(ph, 8), min(pw, 8)
            layers.append(nn.AdaptiveAvgPool2d((ph, pw)))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), *_head(width * ph * pw, hidden, out_features, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], *self.shape)
        return self.head(self.features(x))


ARCHITECTURES = ("mlp", "cnn")


def is_builtin(module: nn.Module) -> bool:
    """Whether a module is one of the built-in architectures (saved as safetensors + JSON)."""
    return isinstance(module, (MLP, CNN))


def build_model(architecture: dict[str, Any]) -> nn.Module:
    """A fresh built-in module from its ``architecture`` dict (as stored in ``config.json``).

    Raises:
        InvalidDataError: the type is unknown or the arguments do not fit it.
    """
    if not isinstance(architecture, dict):
        raise InvalidDataError("config.json: 'architecture' must be an object with a 'type'")
    kind = architecture.get("type")
    try:
        if kind == "mlp":
            return MLP(
                int(architecture["in_features"]),
                [int(h) for h in architecture.get("hidden", [])],
                int(architecture["out_features"]),
                float(architecture.get("dropout", 0.0)),
            )
        if kind == "cnn":
            return CNN(
                [int(s) for s in architecture["image_shape"]],
                int(architecture["out_features"]),
                [int(h) for h in architecture.get("hidden", [])],
                float(architecture.get("dropout", 0.0)),
                [int(c) for c in architecture.get("channels", [16, 32])],
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidDataError(
            f"config.json: architecture {kind!r} is missing or has a bad field: {exc}"
        ) from None
    raise InvalidDataError(
        f"config.json: unknown architecture type {kind!r}; built-in types are: {', '.join(ARCHITECTURES)} "
        "(other models are stored as model.onnx)"
    )
