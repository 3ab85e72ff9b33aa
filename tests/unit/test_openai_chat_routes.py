"""The replica's chat and completions routes in process (aicloud.serving.openai_chat): OpenAI's
error shape for each bad field, the context limit, a full queue (503), the answer's shape and usage,
and a Generator without handlers served by ReplicaApp (its /v1/models)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

from aicloud.serving.app import ReplicaConfig, build_app
from aicloud.serving.generation import Generator, Sequence

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class Letters(Generator):
    context_length = 16
    max_sequences = 2

    def tokenize(self, text: str) -> list[int]:
        return [ALPHABET.index(c) for c in text if c in ALPHABET]

    def detokenize(self, ids: list[int]) -> str:
        return "".join(ALPHABET[i] for i in ids)

    def step(self, batch: list[Sequence]) -> np.ndarray:
        out = np.full((len(batch), 26), -1e9, dtype=np.float32)
        for row, seq in enumerate(batch):
            out[row, (seq.all_tokens[-1] + 1) % 26] = 0.0
        return out


def call(path: str, body: Any, max_queue: int = 64) -> list[httpx.Response]:
    app = build_app(ReplicaConfig(name="letters", key="k", max_queue=max_queue), service=Letters, start=True)

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as c:
            headers = {"Authorization": "Bearer k"}
            out = [await c.post(path, json=body, headers=headers)]
            out.append(await c.get("/v1/models", headers=headers))
            await app.close()
            return out

    return asyncio.run(go())


def test_a_completion_its_usage_and_the_models_list() -> None:
    r, models = call(
        "/v1/completions", {"model": "m", "prompt": "a", "max_tokens": 3, "temperature": 0, "n": 2}
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [c["text"] for c in doc["choices"]] == ["bcd", "bcd"] and doc["model"] == "m"
    assert doc["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}
    assert models.json()["data"][0]["id"] == "letters"
    chat, _ = call("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "context_length_exceeded"


def test_bad_fields_answer_in_openais_shape() -> None:
    cases: list[tuple[str, Any, str | None]] = [
        ("/v1/completions", {"prompt": "a", "max_tokens": 16}, "max_tokens"),  # 1 + 16 > 16
        ("/v1/completions", {"prompt": "a" * 20}, "prompt"),
        ("/v1/completions", {"prompt": 3}, "prompt"),
        ("/v1/completions", {"prompt": "a", "temperature": 3}, "temperature"),
        ("/v1/completions", {"prompt": "a", "n": 17}, "n"),
        ("/v1/completions", {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("/v1/completions", {"prompt": "a", "seed": "x"}, "seed"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0"),
        ("/v1/completions", [1, 2], None),
    ]
    for path, body, param in cases:
        r, _ = call(path, body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"], err


def test_a_full_queue_is_a_503() -> None:
    r, _ = call("/v1/completions", {"prompt": "a", "max_tokens": 2, "n": 3}, max_queue=2)
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
