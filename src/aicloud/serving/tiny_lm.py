"""The zoo's small causal language model (``zoo/tiny-lm``) and the Service that serves it.

A decoder-only transformer (learned positions, pre-norm blocks, tied embeddings) trained by
``tools/train_tiny_lm.py`` on the corpus written for the repository; its weights ship as package data
(``aicloud/zoo/data/tiny_lm``: ``model.safetensors``, ``config.json``, ``tokenizer.json``). Quality is
not the point: it exists to exercise the generation protocol (:mod:`aicloud.serving.generation`).

:class:`TinyLM` is a :class:`~aicloud.serving.generation.Generator`: it keeps one key/value cache
slab of ``[slots, heads, context, head_dim]`` per layer; a sequence takes a slot on its first step
(its prompt is prefilled alone), every later step runs all active sequences' next tokens together,
and :meth:`TinyLM.release` frees the slot. torch is imported by this module only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aicloud.serving.generation import Generator, Sequence

#: The shipped weights, tokenizer and corpus.
DATA = Path(__file__).resolve().parents[1] / "zoo" / "data" / "tiny_lm"
SPECIAL_TOKENS = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


@dataclass(frozen=True)
class TinyLMConfig:
    vocab_size: int = 1024
    context: int = 256
    dim: int = 128
    layers: int = 3
    heads: int = 4

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class Block(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.fc = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.out = nn.Linear(4 * cfg.dim, cfg.dim)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(self.cfg.dim, dim=2)
        shape = (b, t, self.cfg.heads, self.cfg.head_dim)
        return (q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2))

    def _finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = att.shape
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, self.cfg.dim))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal attention over ``x`` [batch, time, dim]; returns the output and its keys and values."""
        q, k, v = self._split(x)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self._finish(x, att), k, v

    def decode(
        self,
        x: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        slots: torch.Tensor,
        pos: torch.Tensor,
    ) -> torch.Tensor:
        """One new token per row (``x`` [batch, 1, dim]) at ``pos``, attending to its slot's cache."""
        q, k, v = self._split(x)
        cache_k[slots, :, pos] = k[:, :, 0]
        cache_v[slots, :, pos] = v[:, :, 0]
        keys, values = cache_k[slots], cache_v[slots]  # [batch, heads, context, head_dim]
        visible = torch.arange(self.cfg.context).view(1, -1) <= pos.view(-1, 1)  # [batch, context]
        att = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible[:, None, None, :])
        return self._finish(x, att)


class TinyLMModule(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Embedding(cfg.context, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.dim)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x) @ self.tok.weight.T

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [batch, time, vocab] for every position (training)."""
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x, _, _ = block(x)
        return self.logits(x)

    def prefill(
        self, ids: torch.Tensor, caches: list[tuple[torch.Tensor, torch.Tensor]], slot: int
    ) -> torch.Tensor:
        """Run one prompt ([1, time]) and keep its keys and values in ``slot``; the last position's logits."""
        t = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(t))
        for block, (ck, cv) in zip(self.blocks, caches, strict=True):
            x, k, v = block(x)
            ck[slot, :, :t] = k[0]
            cv[slot, :, :t] = v[0]
        return self.logits(x[:, -1])[0]

    def decode(
        self,
        ids: torch.Tensor,
        caches: list[tuple[torch.Tensor, torch.Tensor]],
        slots: torch.Tensor,
        pos: torch.Tensor,
    ) -> torch.Tensor:
        """One token per active sequence (``ids`` [batch]); logits [batch, vocab]."""
        x = (self.tok(ids) + self.pos(pos))[:, None, :]
        for block, (ck, cv) in zip(self.blocks, caches, strict=True):
            x = cast(Block, block).decode(x, ck, cv, slots, pos)
        return self.logits(x[:, 0])


#: ``task`` and ``architecture.type`` of the version's ``config.json`` (``aicloud.model/v1``)
TASK = "text-generation"
ARCHITECTURE = "tiny-lm"


def is_tiny_lm(config: dict[str, Any]) -> bool:
    """Whether a model version's config is this LM's (a deployment of it serves through :class:`TinyLM`)."""
    arch = config.get("architecture")
    return config.get("task") == TASK and isinstance(arch, dict) and arch.get("type") == ARCHITECTURE


def load_module(folder: Path = DATA) -> TinyLMModule:
    from safetensors.torch import load_file

    arch = dict(json.loads((folder / "config.json").read_text())["architecture"])
    arch.pop("type", None)
    module = TinyLMModule(TinyLMConfig(**arch))
    module.load_state_dict(load_file(str(folder / "model.safetensors")))
    return module.eval()


def save_module(module: TinyLMModule, folder: Path, extra: dict[str, Any]) -> None:
    """``model.safetensors`` and an ``aicloud.model/v1`` config (task ``text-generation``) into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "aicloud.model/v1"})
    doc = {
        "format": "aicloud.model/v1",
        "task": TASK,
        "architecture": {"type": ARCHITECTURE, **asdict(module.cfg)},
        "generation": {"tokenizer": "tokenizer.json", "context_length": module.cfg.context, "eos": "<|end|>"},
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(doc, indent=1) + "\n")
    (folder / "model.safetensors").chmod(0o644)  # package data: readable by the replicas' uids


class TinyLM(Generator):
    """The zoo LM as a generation Service: ``class Chat(TinyLM): pass`` in a deployment's code, or
    ``entrypoint: aicloud.serving.tiny_lm:TinyLM`` style imports from the Service file."""

    folder: Path = DATA
    max_sequences = 16

    def __init__(self, folder: str | Path | None = None) -> None:
        if folder is not None:  # a registered version's files (`--model zoo/tiny-lm`)
            self.folder = Path(folder)

    def setup(self) -> None:
        from tokenizers import Tokenizer

        torch.set_num_threads(1)
        self.module = load_module(self.folder)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        cfg = self.module.cfg
        self.context_length = cfg.context
        eos = self.tokenizer.token_to_id("<|end|>")
        assert eos is not None, "tokenizer.json has no <|end|> token"
        self.eos_token_ids = (eos,)
        shape = (self.max_sequences, cfg.heads, cfg.context, cfg.head_dim)
        self.caches = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(cfg.layers)]
        self.free = list(range(self.max_sequences - 1, -1, -1))

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def detokenize(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def step(self, batch: list[Sequence]) -> np.ndarray:
        out = np.empty((len(batch), self.module.cfg.vocab_size), dtype=np.float32)
        decode: list[int] = []
        with torch.inference_mode():
            for i, seq in enumerate(batch):
                if seq.state is None:  # first step: take a slot, prefill the prompt alone
                    seq.state = self.free.pop()
                    ids = torch.tensor([seq.pending], dtype=torch.long)
                    out[i] = self.module.prefill(ids, self.caches, seq.state).numpy()
                else:
                    decode.append(i)
            if decode:
                rows = [batch[i] for i in decode]
                ids = torch.tensor([s.pending[-1] for s in rows], dtype=torch.long)
                slots = torch.tensor([s.state for s in rows], dtype=torch.long)
                pos = torch.tensor([s.fed for s in rows], dtype=torch.long)
                out[decode] = self.module.decode(ids, self.caches, slots, pos).numpy()
        return out

    def release(self, seq: Sequence) -> None:
        if seq.state is not None:
            self.free.append(seq.state)
            seq.state = None


def perplexity(module: TinyLMModule, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = module(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return math.exp(float(loss))
