"""A replica serving a text model, in process: /predict, POST /v1/embeddings, GET /v1/models,
batching of texts of different lengths against unbatched calls, and bad input in OpenAI's shape."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from aicloud.artifacts.onnxrt import onnx_runner
from aicloud.artifacts.text import TextTokenizer, save_text_model
from aicloud.serving.app import ReplicaConfig, build_app
from aicloud.serving.text_runtime import MAX_INPUTS, TextRuntime, model_runtime

from model_files import TinyEncoder, text_embedding_folder, tiny_tokenizer

pytestmark = pytest.mark.unit

AUTH = {"Authorization": "Bearer key"}
TEXTS = ["hello world", "where is my order please", "reset my password", "ok", "thanks for the help"]


def _call(app: Any, requests: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as c:
            out = await asyncio.gather(*(c.request(m, p, headers=AUTH, **kw) for m, p, kw in requests))
        await app.close()
        return list(out)

    return asyncio.run(main())


def _own(folder: Path, texts: list[str]) -> np.ndarray:
    """The model's vectors, each text alone (no padding)."""
    tok = TextTokenizer.load(folder)
    run = onnx_runner(folder / "model.onnx")
    return np.concatenate([run(tok.encode([t]).arrays) for t in texts])


def test_embeddings_batched_equal_unbatched(tmp_path: Path) -> None:
    folder, _ = text_embedding_folder(tmp_path / "m")
    runtime = model_runtime(folder)
    assert isinstance(runtime, TextRuntime)
    app = build_app(
        ReplicaConfig(name="emb", key="key", max_batch_size=64, max_wait_ms=20), runtime=runtime, start=True
    )
    calls = [("POST", "/v1/embeddings", {"json": {"model": "emb", "input": t}}) for t in TEXTS]
    calls.append(
        ("POST", "/v1/embeddings", {"json": {"model": "x", "input": TEXTS, "encoding_format": "base64"}})
    )
    calls.append(("POST", "/predict", {"json": {"inputs": [{"text": t} for t in TEXTS]}}))
    calls.append(("GET", "/v1/models", {}))
    calls.append(("POST", "/v1/embeddings", {"json": {"input": TEXTS[:2], "dimensions": 8}}))
    *singles, b64, predict, models, short = _call(app, calls)
    want = _own(folder, TEXTS)
    for i, r in enumerate(singles):
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["object"] == "list" and doc["model"] == "emb"
        assert np.abs(np.array(doc["data"][0]["embedding"]) - want[i]).max() < 1e-5
        assert doc["usage"]["prompt_tokens"] == doc["usage"]["total_tokens"] == len(TEXTS[i].split()) + 2
    doc = b64.json()
    assert doc["model"] == "x" and [d["index"] for d in doc["data"]] == list(range(len(TEXTS)))
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in doc["data"]])
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(np.array(predict.json()["outputs"]) - want).max() < 1e-5
    assert models.json()["data"][0]["id"] == "emb"
    cut = np.array([d["embedding"] for d in short.json()["data"]])
    assert cut.shape == (2, 8) and np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    assert np.allclose(cut, want[:2, :8] / np.linalg.norm(want[:2, :8], axis=1, keepdims=True), atol=1e-5)


def test_bad_input_in_openai_shape(tmp_path: Path) -> None:
    folder, _ = text_embedding_folder(tmp_path / "m")
    app = build_app(ReplicaConfig(name="emb", key="key"), runtime=model_runtime(folder), start=True)
    bodies: list[Any] = [
        {"model": "emb", "input": ""},
        {"model": "emb", "input": ["ok", 3]},
        {"model": "emb", "input": []},
        {"model": "emb", "input": ["ok"] * (MAX_INPUTS + 1)},
        {"model": "emb", "input": [1, 2, 3]},
        {"model": "emb", "input": "ok", "encoding_format": "int8"},
        {"model": "emb", "input": "ok", "dimensions": 33},
        {"model": "emb"},
    ]
    calls = [("POST", "/v1/embeddings", {"json": b}) for b in bodies]
    *out, chat = _call(app, [*calls, ("POST", "/v1/chat/completions", {"json": {"model": "emb"}})])
    assert [r.status_code for r in out] == [400, 400, 400, 413, 400, 400, 400, 400]
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"  # no chat here
    for r in out:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert "input[0]: empty string" in out[0].json()["error"]["message"]
    assert out[1].json()["error"]["param"] == "input" and "input[1]" in out[1].json()["error"]["message"]
    assert out[6].json()["error"]["param"] == "dimensions"


def test_text_classifier_predict(tmp_path: Path) -> None:
    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = TinyEncoder()
            self.fc = torch.nn.Linear(32, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.fc(self.enc(input_ids, attention_mask)) * 10

    torch.manual_seed(1)
    folder = save_text_model(
        tmp_path / "c", Head().eval(), tiny_tokenizer(), "text-classification", labels=["a", "b", "c"]
    )
    app = build_app(ReplicaConfig(name="intent", key="key"), runtime=model_runtime(folder), start=True)
    predict, emb, models = _call(
        app,
        [
            ("POST", "/predict", {"json": {"inputs": TEXTS}}),
            ("POST", "/v1/embeddings", {"json": {"input": "ok"}}),
            ("GET", "/v1/models", {}),
        ],
    )
    doc = predict.json()
    assert len(doc["outputs"]) == len(TEXTS) and set(doc["outputs"]) <= {"a", "b", "c"}
    probs = np.array(doc["probabilities"])
    assert probs.shape == (len(TEXTS), 3) and np.allclose(probs.sum(1), 1.0)
    assert [["a", "b", "c"][i] for i in probs.argmax(1)] == doc["outputs"]
    assert emb.status_code == 400 and models.status_code == 404
