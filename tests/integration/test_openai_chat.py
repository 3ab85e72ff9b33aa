"""OpenAI chat and completions through the gateway with the real ``openai`` client (docs/openai.md):
the zoo's tiny LM deployed as a model (``aicloud zoo pull tiny-lm``, ``--model zoo/tiny-lm``; sync
and async, streaming and not, stop, seed, n, include_usage, max_tokens beyond the context, per
endpoint and at the workspace's ``/openai/v1``), and a generation Service of the user's own (a slow
counting "model") whose caller hangs up mid-stream: its sequence is dropped (the replica's
``aicloud_generation_cancelled`` counter) while the replica keeps serving."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

COUNTER = '''
import time

import numpy as np

from aicloud.serving.generation import Generator

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class Counter(Generator):
    """A user's own "model": characters as tokens; it always predicts the letter after the last one,
    slowly (50 ms a step), so a test can hang up while it generates."""

    context_length = 128
    max_sequences = 4

    def tokenize(self, text):
        return [ALPHABET.index(c) if c in ALPHABET else 0 for c in text]

    def detokenize(self, ids):
        return "".join(ALPHABET[i] for i in ids)

    def step(self, batch):
        time.sleep(0.05)
        out = np.full((len(batch), len(ALPHABET)), -1e9, dtype=np.float32)
        for row, seq in enumerate(batch):
            out[row, (seq.all_tokens[-1] + 1) % len(ALPHABET)] = 0.0
        return out
'''


def _deploy(client: Client, tmp_path: Path, name: str, code: str, entrypoint: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    (folder / entrypoint.split(":")[0]).write_text(code)
    dep = client.deployments.create(
        name, service=folder, entrypoint=entrypoint, min_replicas=1, max_replicas=1
    )
    dep.wait_ready(timeout=240)


def _deploy_tiny_lm(client: Client, name: str) -> None:
    client.zoo.pull("tiny-lm")  # registers the shipped files (a no-op when pulled already)
    dep = client.deployments.create(name, model="zoo/tiny-lm", min_replicas=1, max_replicas=1)
    dep.wait_ready(timeout=240)


@pytest.fixture(scope="module")
def chat_names(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("chat")
    suffix = str(int(time.time() * 1000) % 10**8)
    names = {"tiny": f"tiny-lm-{suffix}", "counter": f"counter-{suffix}"}
    with Client(url=server.url, token=server.token) as client:
        _deploy_tiny_lm(client, names["tiny"])
        _deploy(client, tmp, names["counter"], COUNTER, "counter.py:Counter")
        yield names
        for name in names.values():
            client.deployments.get(name).delete()


def _openai(server: ServerProcess, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1/endpoints/{name}/v1", api_key=server.token, max_retries=0)


def test_chat_and_completions_with_the_openai_client(
    server: ServerProcess, chat_names: dict[str, str]
) -> None:
    oai = _openai(server, chat_names["tiny"])
    models = oai.models.list()
    assert [m.id for m in models.data] == [chat_names["tiny"]]
    messages = [{"role": "user", "content": "What is two plus three?"}]
    reply = oai.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    again = oai.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert again.choices[0].message.content == choice.message.content  # greedy: the same text

    done = oai.completions.create(model="tiny", prompt="The little cloud", max_tokens=8, temperature=0)
    assert done.object == "text_completion" and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.completion_tokens <= 8

    # seed: the same seed, the same sampled text; n choices, each its own
    kwargs = {"model": "tiny", "prompt": "Once", "max_tokens": 10, "temperature": 1.0, "top_p": 0.9}
    first = oai.completions.create(seed=7, n=3, **kwargs)  # type: ignore[arg-type]
    second = oai.completions.create(seed=7, n=3, **kwargs)  # type: ignore[arg-type]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in second.choices]

    # stop: the text ends before the stop string, the finish reason is "stop"
    free = oai.completions.create(model="tiny", prompt="The river", max_tokens=30, temperature=0)
    text = free.choices[0].text
    if len(text) > 4:
        stop = text[2:4]
        cut = oai.completions.create(
            model="tiny", prompt="The river", max_tokens=30, temperature=0, stop=[stop]
        )
        assert cut.choices[0].text == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_streaming_chunks_usage_and_the_context_limit(
    server: ServerProcess, chat_names: dict[str, str]
) -> None:
    oai = _openai(server, chat_names["tiny"])
    messages = [{"role": "user", "content": "Tell me about the river."}]
    whole = oai.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0)  # type: ignore[arg-type]
    stream = oai.chat.completions.create(
        model="tiny",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # streamed and whole agree
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # the usage chunk comes last

    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="tiny", messages=messages, max_tokens=100_000)  # type: ignore[arg-type]
    assert bad.value.code == "context_length_exceeded" and bad.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model="tiny", prompt="x", temperature=5)

    async def concurrent() -> list[str]:
        aoai = openai.AsyncOpenAI(
            base_url=f"{server.url}/v1/endpoints/{chat_names['tiny']}/v1", api_key=server.token, max_retries=0
        )
        async with aoai:

            async def one(i: int) -> str:
                parts = []
                async for chunk in await aoai.completions.create(
                    model="tiny", prompt=f"Count to {i}", max_tokens=6, temperature=0, stream=True
                ):
                    parts.append(chunk.choices[0].text)
                return "".join(parts)

            streamed = await asyncio.gather(*(one(i) for i in range(6)))
            alone = await aoai.completions.create(
                model="tiny", prompt="Count to 3", max_tokens=6, temperature=0
            )
            assert streamed[3] == alone.choices[0].text  # batched with others or alone: the same text
            return streamed

    assert len(asyncio.run(concurrent())) == 6


def _metric(server: ServerProcess, name: str, metric: str) -> float:
    r = httpx.get(
        f"{server.url}/v1/endpoints/{name}/metrics",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    r.raise_for_status()
    found = re.search(rf"^{metric} ([0-9.e+]+)$", r.text, re.M)
    return float(found.group(1)) if found else 0.0


def _eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_caller_that_hangs_up_stops_its_generation(
    server: ServerProcess, chat_names: dict[str, str]
) -> None:
    name = chat_names["counter"]
    oai = _openai(server, name)
    before = _metric(server, name, "aicloud_generation_cancelled_total")
    tokens_before = _metric(server, name, "aicloud_generation_tokens_total")
    stream = oai.completions.create(model=name, prompt="a", max_tokens=100, stream=True, temperature=0)
    got = ""
    for chunk in stream:
        got += chunk.choices[0].text
        if len(got) >= 3:
            break
    stream.close()  # hang up after 3 of 100 tokens
    assert got.startswith("bcd")
    _eventually(
        lambda: _metric(server, name, "aicloud_generation_cancelled_total") >= before + 1,
        "the replica did not drop the sequence of the caller that hung up",
    )
    made = _metric(server, name, "aicloud_generation_tokens_total") - tokens_before
    assert made < 100  # it stopped before max_tokens
    assert _metric(server, name, "aicloud_generation_active_sequences") == 0
    # the replica stays healthy: the next caller gets its whole answer
    after = oai.completions.create(model=name, prompt="x", max_tokens=3, temperature=0)
    assert after.choices[0].text == "yza" and after.choices[0].finish_reason == "length"


def test_the_workspace_openai_api_routes_by_model(server: ServerProcess, chat_names: dict[str, str]) -> None:
    oai = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=server.token, max_retries=0)
    name = chat_names["tiny"]
    assert name in [m.id for m in oai.models.list().data]
    direct = _openai(server, name).completions.create(
        model=name, prompt="The owl", max_tokens=8, temperature=0
    )
    via = oai.completions.create(model=name, prompt="The owl", max_tokens=8, temperature=0)
    assert via.choices[0].text == direct.choices[0].text and via.model == name
    parts = [
        c.choices[0].delta.content or ""
        for c in oai.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "Hello, I am Ada."}],
            max_tokens=12,
            temperature=0,
            stream=True,
        )
        if c.choices
    ]
    assert "".join(parts)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-deployment", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model=name, prompt="hi", max_tokens=10_000)
