"""tritonclient against an endpoint through the real server: infer, the model configuration and
statistics extensions, server metadata, and errors in the protocol's ``{"error": "<message>"}``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error
from model_files import mlp_folder

triton = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException


@pytest.fixture(scope="module")
def endpoint(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A deployment of a 4-feature, 2-label classifier registered without training; yields its name."""
    name = f"triton-{uuid.uuid4().hex[:8]}"
    sig = {"inputs": [{"name": n, "dtype": "float64"} for n in "abcd"], "outputs": [{"name": "label"}]}
    config = {"task": "tabular-classification", "signature": sig, "labels": [0, 1]}
    folder, _ = mlp_folder(tmp_path_factory.mktemp("triton-model"), 4, [8], 2, config)
    with Client(url=server.url, token=server.token) as c:
        files = {p.name: c.blobs.upload(p.read_bytes()) for p in sorted(Path(folder).iterdir())}
        saved = json.loads((Path(folder) / "config.json").read_text())
        c.models.register_version(name, files, signature=sig, config=saved, metrics={})
        dep = c.deployments.create(name, model=f"{name}:1").wait_ready(timeout=120)
        yield name
        dep.delete()


def connect(server: ServerProcess, name: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"{server.url.removeprefix('http://')}/v1/endpoints/{name}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}  # a fresh dict per call: tritonclient writes into it


def infer_input(x: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_infer_config_stats_and_server_metadata(server: ServerProcess, endpoint: str) -> None:
    client = connect(server, endpoint)
    token = server.token
    meta = client.get_server_metadata(headers=auth(token))
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])

    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    for binary in (True, False):
        result = client.infer(endpoint, [infer_input(x, binary)], headers=auth(token))
        out = result.as_numpy("output")
        assert out is not None and out.shape == (5,) and set(out.tolist()) <= {0, 1}

    config = client.get_model_config(endpoint, headers=auth(token))
    assert config["name"] == endpoint and config["platform"] == "aicloud" and config["backend"]
    assert config["max_batch_size"] >= 1
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["output"] == [
        {"name": "output", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}
    ]
    assert client.get_model_config(endpoint, "1", headers=auth(token))["name"] == endpoint

    with pytest.raises(InferenceServerException):
        client.infer(endpoint, [infer_input(x[:, :3])], headers=auth(token))  # counted as a failure
    stats = client.get_inference_statistics(endpoint, headers=auth(token))["model_stats"]
    assert [s["name"] for s in stats] == [endpoint]
    model = stats[0]
    assert model["version"] == "1" and model["last_inference"] > 0
    assert model["inference_count"] >= 10 and model["execution_count"] >= 1
    success, fail = model["inference_stats"]["success"], model["inference_stats"]["fail"]
    assert success["count"] >= 2 and success["ns"] > 0
    assert fail["count"] >= 1 and fail["ns"] > 0
    assert model["inference_stats"]["compute_infer"]["count"] >= 2
    assert sum(b["compute_infer"]["count"] for b in model["batch_stats"]) == model["execution_count"]
    every = client.get_inference_statistics(headers=auth(token))["model_stats"]
    assert [s["name"] for s in every] == [endpoint]
    assert client.get_inference_statistics(endpoint, "1", headers=auth(token))["model_stats"]


def test_errors_reach_tritonclient_with_aicloud_messages(server: ServerProcess, endpoint: str) -> None:
    client = connect(server, endpoint)
    token = server.token
    x = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(InferenceServerException) as bad_shape:
        client.infer(endpoint, [infer_input(x)], headers=auth(token))
    assert bad_shape.value.status() == "400"
    assert "expected shape [-1, 4], got [2, 3]" in bad_shape.value.message()

    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_config("no-such-model", headers=auth(token))
    assert unknown.value.status() == "404" and "no-such-model" in unknown.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [infer_input(np.zeros((1, 4), np.float32))], headers=auth(token))
    assert unknown.value.status() == "404" and "no-such-model" in unknown.value.message()
    assert f"this endpoint serves model {endpoint!r}" in unknown.value.message()
    with pytest.raises(InferenceServerException) as no_version:
        client.get_model_config(endpoint, "7", headers=auth(token))
    assert no_version.value.status() == "404" and "serves version '1'" in no_version.value.message()

    with pytest.raises(InferenceServerException) as missing:
        client.get_server_metadata()
    assert missing.value.status() == "401" and missing.value.message()
    with pytest.raises(InferenceServerException) as wrong:
        client.get_model_config(endpoint, headers=auth("aic_nope_nope"))
    assert wrong.value.status() == "401" and wrong.value.message()

    with pytest.raises(InferenceServerException) as gone:
        connect(server, "no-such-endpoint").get_server_metadata(headers=auth(token))
    assert gone.value.status() == "404" and "no-such-endpoint" in gone.value.message()


def test_oip_errors_have_the_protocol_shape_and_predict_keeps_aicloud_s(
    server: ServerProcess, endpoint: str
) -> None:
    base = f"{server.url}/v1/endpoints/{endpoint}"
    h = auth(server.token)
    r = httpx.post(f"{base}/v2/models/{endpoint}/infer", json={"inputs": []}, headers=h)
    assert r.status_code == 400 and isinstance(r.json()["error"], str), r.text
    r = httpx.get(f"{base}/v2/models/{endpoint}/nothing-here", headers=h)
    assert r.status_code == 404 and isinstance(r.json()["error"], str), r.text
    r = httpx.get(f"{base}/v2")
    assert r.status_code == 401 and isinstance(r.json()["error"], str), r.text
    assert_error(httpx.post(f"{base}/predict", json={"inputs": []}, headers=h), 400)
    assert_error(httpx.post(f"{base}/predict", json={"inputs": [[0, 0, 0, 0]]}), 401, "unauthenticated")
