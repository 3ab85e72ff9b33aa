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


class TinyEncoder(torch.nn.Module):
    """A BERT-like sentence encoder of random weights: token and position embeddings, one layer of
    masked self-attention and a feed-forward block (each with a residual and a layer norm), then the
    mean over the attention mask, L2-normalised: the shape of the MiniLM Service's model (two int64
    inputs ``input_ids`` and ``attention_mask`` of any length, one float vector per row)."""

    def __init__(self, vocab: int = 100, dim: int = 32, max_len: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(vocab, dim)
        self.positions = torch.nn.Embedding(max_len, dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.attn_out = torch.nn.Linear(dim, dim)
        self.norm1 = torch.nn.LayerNorm(dim)
        self.ff = torch.nn.Sequential(
            torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim)
        )
        self.norm2 = torch.nn.LayerNorm(dim)
        self.scale = scale
        self.dim = dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        h = self.tokens(input_ids) + self.positions(positions)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        mask = attention_mask.to(h.dtype)
        scores = q @ k.transpose(1, 2) / self.dim**0.5 + (1.0 - mask).unsqueeze(1) * -1e4
        h = self.norm1(h + self.attn_out(torch.softmax(scores, dim=-1) @ v))
        h = self.norm2(h + self.ff(h))
        weights = mask.unsqueeze(-1)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1) * self.scale  # 1: unit vectors


def token_batch(rows: int, length: int, seed: int = 0, vocab: int = 100) -> dict[str, torch.Tensor]:
    """Token ids and an attention mask (each row a random length, the rest padding with id 0)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, length), generator=gen)
    lengths = torch.randint(1, length + 1, (rows,), generator=gen)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


ENCODER_AXES = {"input_ids": [1], "attention_mask": [1]}


def encoder_folder(folder: Path, seed: int = 0, scale: float = 1.0) -> tuple[Path, torch.nn.Module]:
    """A :class:`TinyEncoder` saved as ``save_model`` saves it (ONNX, dynamic batch and sequence
    axes, checked against the module): (the folder, the module)."""
    from aicloud.artifacts.format import save_onnx

    torch.manual_seed(seed)
    module = TinyEncoder(scale=scale).eval()
    return save_onnx(folder, module, token_batch(4, 12, seed), {}, dynamic_axes=ENCODER_AXES), module


TINY_WORDS = (  # noqa: SIM905 (a sentence of words reads better than 50 quoted ones)
    "hello world the a an is are was to of and in on for with my your order refund card account "
    "password reset cancel delivery where when how what please help thanks ok yes no not late "
    "broken change address pay bill money send receive open close login email phone"
).split()


def tiny_tokenizer() -> Any:
    """A WordLevel ``tokenizers`` tokenizer (lowercased, whitespace-split, ``[CLS] … [SEP]``) over
    :data:`TINY_WORDS`, ids below :class:`TinyEncoder`'s vocabulary of 100."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(dict.fromkeys(TINY_WORDS))})
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok


def text_embedding_folder(folder: Path, seed: int = 0, max_length: int = 32) -> tuple[Path, torch.nn.Module]:
    """A text-embedding version (TinyEncoder + :func:`tiny_tokenizer`, 32 dimensions) written with
    ``save_text_model``: (the folder, the module)."""
    from aicloud.artifacts.text import save_text_model

    torch.manual_seed(seed)
    module = TinyEncoder().eval()
    return save_text_model(folder, module, tiny_tokenizer(), "text-embedding", max_length=max_length), module


TINY_BERT = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}


def tiny_bert_folder(folder: Path, seed: int = 0) -> Path:
    """A text encoder as zoo/minilm ships one, tiny: a 2-layer BERT (random weights, HF parameter
    names) as a text-embedding ONNX version with :func:`tiny_tokenizer`, plus its torch weights
    ``encoder.safetensors`` and ``encoder_config.json`` (for full and lora fine-tuning)."""
    from safetensors.torch import save_file

    from aicloud.artifacts.text import save_text_model
    from aicloud.training.text_encoder import BertEncoder, TextEmbedder

    torch.manual_seed(seed)
    encoder = BertEncoder(TINY_BERT).eval()
    save_text_model(folder, TextEmbedder(encoder), tiny_tokenizer(), "text-embedding", max_length=32)
    save_file(
        {k: v.contiguous() for k, v in encoder.state_dict().items()}, str(folder / "encoder.safetensors")
    )
    (folder / "encoder_config.json").write_text(json.dumps(TINY_BERT))
    return folder
