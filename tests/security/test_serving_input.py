"""Hostile predict input through the real gateway to a real replica, and where a deployment's URL comes
from. The model folder is written with ``save_builtin`` (no training), registered from its blobs and
deployed by a member of a second workspace."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pydantic
import pytest

from aicloud.config import Settings
from aicloud.testing.server import ServerProcess

from helpers import assert_error, assert_oip_error

COLUMNS = ["a", "b", "c", "d"]
DEEP = 50_000


@pytest.fixture(scope="module")
def deployment(member: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from aicloud.artifacts.architectures import MLP
    from aicloud.artifacts.format import save_builtin
    from aicloud.artifacts.preprocess import Preprocessor

    pre = Preprocessor(features=COLUMNS, standardize={n: [0.0, 1.0] for n in COLUMNS})
    config = {
        "task": "tabular-classification",
        "preprocessing": pre.to_config(),
        "signature": {
            "inputs": [{"name": n, "dtype": "float64"} for n in COLUMNS],
            "outputs": [{"name": "label", "dtype": "int64"}],
        },
        "labels": [0, 1],
    }
    folder = save_builtin(tmp_path_factory.mktemp("sec-model") / "model", MLP(len(COLUMNS), [8], 2), config)
    files = {}
    for path in sorted(folder.iterdir()):
        r = member.post(
            "/api/v1/blobs", content=path.read_bytes(), headers={"Content-Type": "application/octet-stream"}
        )
        assert r.status_code == 201, r.text
        files[path.name] = r.json()["digest"]
    model = f"sec-mlp-{uuid.uuid4().hex[:6]}"
    r = member.post(
        f"/api/v1/models/{model}/versions", json={"files": files, "signature": config["signature"]}
    )
    assert r.status_code == 201, r.text
    name = f"sec-dep-{uuid.uuid4().hex[:6]}"
    r = member.post("/api/v1/deployments", json={"name": name, "model": model, "min_replicas": 1})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 120
    while (status := member.get(f"/api/v1/deployments/{name}").json()["status"]) != "ready":
        assert status != "failed" and time.monotonic() < deadline, member.get(
            f"/api/v1/deployments/{name}"
        ).text
        time.sleep(0.2)
    yield name
    member.delete(f"/api/v1/deployments/{name}")


def _predict(member: httpx.Client, name: str, body: bytes | dict[str, Any]) -> httpx.Response:
    url = f"/v1/endpoints/{name}/predict"
    if isinstance(body, bytes):
        return member.post(url, content=body, headers={"Content-Type": "application/json"})
    return member.post(url, json=body)


def _infer(member: httpx.Client, name: str, body: bytes | dict[str, Any]) -> httpx.Response:
    url = f"/v1/endpoints/{name}/v2/models/{name}/infer"
    if isinstance(body, bytes):
        return member.post(url, content=body, headers={"Content-Type": "application/json"})
    return member.post(url, json=body)


def test_a_good_request_still_answers(member: httpx.Client, deployment: str) -> None:
    r = _predict(member, deployment, {"inputs": [[0.1, 0.2, 0.3, 0.4], {"a": 1, "b": 2, "c": 3, "d": 4}][:1]})
    assert r.status_code == 200, r.text
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}
    r = _infer(member, deployment, {"inputs": [tensor]})
    assert r.status_code == 200, r.text


def test_deeply_nested_input_is_a_4xx_naming_the_limit(member: httpx.Client, deployment: str) -> None:
    deep = b"[" * DEEP + b"]" * DEEP
    err = assert_error(_predict(member, deployment, b'{"inputs": ' + deep + b"}"), 400, "bad_request")
    assert "nested deeper than 200 levels" in err["message"], err
    tensor = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": ' + deep + b"}]}"
    message = assert_oip_error(_infer(member, deployment, tensor), 400)  # OIP: {"error": "<message>"}
    assert "nested deeper than 200 levels" in message, message


def test_booleans_are_refused_like_strings_for_numeric_features(
    member: httpx.Client, deployment: str
) -> None:
    as_string = assert_error(_predict(member, deployment, {"inputs": [["x", 0.2, 0.3, 0.4]]}), 400)
    for inputs, field in (
        ([[True, 0.2, 0.3, 0.4]], "inputs[0][0] (a)"),
        ([[0.1, 0.2, 0.3, False]], "inputs[0][3] (d)"),
        ([[True, False, True, True]], "inputs[0][0] (a)"),
        ([{"a": 0.1, "b": True, "c": 0.3, "d": 0.4}], "inputs[0].b"),
    ):
        err = assert_error(_predict(member, deployment, {"inputs": inputs}), 400, as_string["code"])
        assert err["details"][0]["field"] == field, err
        assert "boolean" in err["message"], err


def test_booleans_are_refused_in_oip_tensors(member: httpx.Client, deployment: str) -> None:
    fp32 = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [True, 0.2, 0.3, 0.4]}
    message = assert_oip_error(_infer(member, deployment, {"inputs": [fp32]}), 400)
    assert message.startswith("inputs[0].data: ") and "boolean" in message, message
    nested = {**fp32, "data": [[0.1, 0.2], [0.3, False]], "datatype": "INT64"}
    assert_oip_error(_infer(member, deployment, {"inputs": [nested]}), 400)
    as_bool = {"name": "input", "datatype": "BOOL", "shape": [1, 4], "data": [True, False, True, True]}
    message = assert_oip_error(_infer(member, deployment, {"inputs": [as_bool]}), 400)
    assert "numeric datatype" in message, message


def test_the_deployment_url_does_not_echo_the_host_header(
    server: ServerProcess, member: httpx.Client, deployment: str
) -> None:
    for host in ("evil.example", "evil.example:8420", "127.0.0.1:1"):
        r = member.get(f"/api/v1/deployments/{deployment}", headers={"Host": host})
        assert r.status_code == 200, r.text
        assert r.json()["url"] == f"{server.url}/v1/endpoints/{deployment}"
        listed = member.get("/api/v1/deployments", headers={"Host": host}).json()
        assert {d["url"] for d in listed} == {f"{server.url}/v1/endpoints/{d['name']}" for d in listed}


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"public_url": "https://ai.example.com/base/"}, "https://ai.example.com/base"),
        ({"host": "10.1.2.3", "port": 9000}, "http://10.1.2.3:9000"),
        ({"host": "0.0.0.0"}, "http://127.0.0.1:8420"),
        ({"host": "::"}, "http://[::1]:8420"),
    ],
)
def test_the_public_url_comes_from_settings(env: dict[str, Any], url: str) -> None:
    assert Settings(**env).resolved_public_url == url


def test_a_public_url_must_be_a_plain_http_url() -> None:
    for bad in ("https://x.example\n", "ftp://x.example", "http://x.example y", "//x.example"):
        with pytest.raises(pydantic.ValidationError):
            Settings(public_url=bad)
