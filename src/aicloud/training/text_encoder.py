"""A small BERT encoder in torch, loaded from HF BERT parameter names, and low-rank adapters (LoRA).

Why not ``transformers.BertModel``: it is installed with ``aicloud[zoo]`` (through
sentence-transformers), but importing it costs seconds (about 2-4 s on the 2-core machine, against
about 0.1 s for this module once torch is loaded) and it brings nothing a fine-tune needs here. This
module reads the same ``encoder.safetensors`` names (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``...) and ``encoder_config.json`` (a BertConfig) and
computes the same function (post-LayerNorm BERT, exact GELU, absolute positions).

* :class:`BertEncoder`: token ids → hidden states; :func:`load_encoder` builds it from a model folder.
* :class:`TextClassifier`: the encoder, mean pooling over the attention mask, a linear head → logits.
* :class:`LoRALinear`: ``y = W x + b + (alpha / r) · B A x`` on a frozen ``nn.Linear``; :func:`add_lora`
  puts it on the attention's query and value projections, :func:`merge_lora` folds ``B A`` back into
  ``W`` (the merged model computes the same outputs, so one plain ONNX graph serves it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_CONFIG = "encoder_config.json"
LORA_TARGETS = ("query", "value")


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        hidden = int(cfg["hidden_size"])
        self.word_embeddings = nn.Embedding(
            int(cfg["vocab_size"]), hidden, padding_idx=cfg.get("pad_token_id", 0)
        )
        self.position_embeddings = nn.Embedding(int(cfg.get("max_position_embeddings", 512)), hidden)
        self.token_type_embeddings = nn.Embedding(int(cfg.get("type_vocab_size", 2)), hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=float(cfg.get("layer_norm_eps", 1e-12)))
        self.dropout = nn.Dropout(float(cfg.get("hidden_dropout_prob", 0.1)))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.size = heads, hidden // heads
        self.query, self.key, self.value = (
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, self.size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.size) + bias
        context = self.dropout(scores.softmax(dim=-1)) @ v
        return context.transpose(1, 2).reshape(b, t, self.heads * self.size)


class _DenseNorm(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``: BERT's ``attention.output`` and ``output``."""

    def __init__(self, n_in: int, hidden: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = int(cfg["hidden_size"]), float(cfg.get("layer_norm_eps", 1e-12))
        p = float(cfg.get("attention_probs_dropout_prob", 0.1))
        self.self = _SelfAttention(hidden, int(cfg["num_attention_heads"]), p)
        self.output = _DenseNorm(hidden, hidden, eps, float(cfg.get("hidden_dropout_prob", 0.1)))


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)


class _Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        hidden, inner = int(cfg["hidden_size"]), int(cfg["intermediate_size"])
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(hidden, inner)
        eps, p = float(cfg.get("layer_norm_eps", 1e-12)), float(cfg.get("hidden_dropout_prob", 0.1))
        self.output = _DenseNorm(inner, hidden, eps, p)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        a = self.attention.output(self.attention.self(x, bias), x)
        h = nn.functional.gelu(self.intermediate.dense(a))
        return self.output(h, a)


class _Stack(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(int(cfg["num_hidden_layers"])))


class BertEncoder(nn.Module):
    """BERT's encoder (no pooler): ``(input_ids, attention_mask, token_type_ids)`` → ``[B, T, H]``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(cfg)
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Stack(cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, types)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the hidden states over the tokens the mask keeps."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def load_encoder(folder: str | Path) -> BertEncoder:
    """A :class:`BertEncoder` from ``encoder_config.json`` and ``encoder.safetensors`` (HF BERT names)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = json.loads((folder / ENCODER_CONFIG).read_text())
    model = BertEncoder(cfg)
    state = {k: v for k, v in load_file(str(folder / ENCODER_WEIGHTS)).items() if not k.startswith("pooler.")}
    state.pop("embeddings.position_ids", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"encoder weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


class TextClassifier(nn.Module):
    """Encoder → mean pooling → dropout → linear head: ``logits [B, C]``."""

    def __init__(self, encoder: BertEncoder, classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.config["hidden_size"]), classes)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pooled = mean_pool(self.encoder(input_ids, attention_mask, token_type_ids), attention_mask)
        return self.head(self.dropout(pooled))


class TextEmbedder(nn.Module):
    """Encoder → mean pooling → L2 normalization: the text-embedding graph (output ``embeddings``)."""

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pooled = mean_pool(self.encoder(input_ids, attention_mask, token_type_ids), attention_mask)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


# -----------------------------------------------------------------------------------------------------
# LoRA


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trained low-rank update: ``base(x) + (alpha / r) · (x Aᵀ) Bᵀ``.

    ``A`` starts small and random, ``B`` at zero, so the adapted layer starts equal to the base.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + (alpha / r) · B A``: the same outputs (without dropout)."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + (self.lora_B @ self.lora_A) * self.scale)
            if self.base.bias is not None and out.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _attention(layer: nn.Module) -> _SelfAttention:
    assert isinstance(layer, _Layer)
    return layer.attention.self


def add_lora(encoder: BertEncoder, rank: int, alpha: float, targets: tuple[str, ...] = LORA_TARGETS) -> None:
    """Freeze the encoder and put :class:`LoRALinear` on each layer's attention projections ``targets``."""
    for p in encoder.parameters():
        p.requires_grad_(False)
    for layer in encoder.encoder.layer:
        attn = _attention(layer)
        for name in targets:
            setattr(attn, name, LoRALinear(getattr(attn, name), rank, alpha))


def merge_lora(encoder: BertEncoder) -> None:
    """Replace each :class:`LoRALinear` of the encoder by its merged ``nn.Linear`` (in place)."""
    for layer in encoder.encoder.layer:
        attn = _attention(layer)
        for name in ("query", "key", "value"):
            module = getattr(attn, name)
            if isinstance(module, LoRALinear):
                setattr(attn, name, module.merged())


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors (every ``lora_A``/``lora_B``) by their names in the model."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if ".lora_" in k}
