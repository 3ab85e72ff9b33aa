"""Text models (aicloud.artifacts.text): the text block, the tokenizer's padding/truncation and the writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aicloud.artifacts.format import read_config
from aicloud.artifacts.onnxrt import onnx_runner
from aicloud.artifacts.text import TextTokenizer, pad, save_text_model, text_spec
from aicloud.errors import InvalidDataError, ValidationError

from model_files import TinyEncoder, text_embedding_folder, tiny_tokenizer

pytestmark = pytest.mark.unit


def test_text_embedding_folder_round_trip(tmp_path: Path) -> None:
    folder, module = text_embedding_folder(tmp_path / "m")
    config = read_config(folder)
    assert config["task"] == "text-embedding" and config["dimensions"] == 32
    assert config["text"] == {
        "tokenizer": "tokenizer.json",
        "max_length": 32,
        "inputs": ["input_ids", "attention_mask"],
        "lowercase": False,
    }
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.onnx", "tokenizer.json"]
    tok = TextTokenizer.load(folder)
    enc = tok.encode(["Hello world", "where is my order please", "zzz"])
    assert enc.arrays["input_ids"].dtype == np.int64
    assert enc.arrays["input_ids"].shape == (3, 7)  # [CLS] 5 words [SEP]
    assert enc.tokens == [4, 7, 3] and enc.truncated == [False, False, False]
    assert enc.arrays["attention_mask"].sum(1).tolist() == [4, 7, 3]
    assert enc.arrays["input_ids"][2].tolist()[:3] == [2, 1, 3]  # unknown word
    run = onnx_runner(folder / "model.onnx")
    out = run(enc.arrays)
    with torch.inference_mode():
        want = module(*(torch.from_numpy(enc.arrays[k]) for k in ("input_ids", "attention_mask"))).numpy()
    assert np.abs(out - want).max() < 1e-5
    # padded in a batch or alone: the same vector
    for row, text in enumerate(["Hello world", "where is my order please"]):
        alone = run(tok.encode([text]).arrays)
        assert np.abs(alone[0] - out[row]).max() < 1e-5
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_truncation_and_pad(tmp_path: Path) -> None:
    folder, _ = text_embedding_folder(tmp_path / "m", max_length=8)
    tok = TextTokenizer.load(folder)
    enc = tok.encode(["hello " * 20, "ok"])
    assert enc.tokens == [8, 3] and enc.truncated == [True, False]
    assert enc.arrays["input_ids"].shape == (2, 8)
    a = tok.encode(["ok"]).arrays
    b = tok.encode(["hello world how are you"]).arrays
    merged = pad([a, b])
    assert merged["input_ids"].shape == (2, 7)
    assert merged["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0]


def test_classifier_and_bad_arguments(tmp_path: Path) -> None:
    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = TinyEncoder()
            self.fc = torch.nn.Linear(32, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.fc(self.enc(input_ids, attention_mask))

    folder = save_text_model(
        tmp_path / "c", Head().eval(), tiny_tokenizer(), "text-classification", labels=["a", "b", "c"]
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["labels"] == ["a", "b", "c"] and text_spec(config).output == "logits"
    with pytest.raises(ValidationError, match="labels"):
        save_text_model(
            tmp_path / "d", Head().eval(), tiny_tokenizer(), "text-classification", labels=["a", "b"]
        )
    assert not (tmp_path / "d" / "config.json").exists()
    with pytest.raises(ValidationError, match="not L2-normalized"):
        save_text_model(tmp_path / "e", TinyEncoder(scale=2.0).eval(), tiny_tokenizer(), "text-embedding")
    with pytest.raises(ValidationError, match="dimensions=16"):
        save_text_model(
            tmp_path / "e", TinyEncoder().eval(), tiny_tokenizer(), "text-embedding", dimensions=16
        )
    with pytest.raises(ValidationError, match="task"):
        save_text_model(tmp_path / "e", TinyEncoder().eval(), tiny_tokenizer(), "summarize")
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())
    # an ONNX file as the model: kept as it is
    again = save_text_model(
        tmp_path / "f",
        folder / "model.onnx",
        folder / "tokenizer.json",
        "text-classification",
        labels=[1, 2, 3],
    )
    assert read_config(again)["labels"] == [1, 2, 3]


def test_text_spec_rejects() -> None:
    base = {"task": "text-embedding", "dimensions": 4, "text": {"tokenizer": "tokenizer.json"}}
    assert text_spec(base).max_length == 256
    for bad in (
        {**base, "text": {"tokenizer": "../x.json"}},
        {**base, "text": {"max_length": 0}},
        {**base, "text": {"inputs": ["attention_mask"]}},
        {**base, "text": {"lowercase": "yes"}},
        {**base, "dimensions": None},
        {**base, "task": "text-classification"},
        {"task": "text-embedding", "dimensions": 4},
    ):
        with pytest.raises(InvalidDataError):
            text_spec(bad)
