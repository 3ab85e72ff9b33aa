"""aicloud.serving: signature validation, the response cache, OIP tensors, Service schemas, the app."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from aicloud import Service, handler
from aicloud.errors import BadRequestError
from aicloud.serving.app import ReplicaConfig, build_app
from aicloud.serving.cache import ResponseCache, cache_key
from aicloud.serving.oip import (
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    parse_infer_request,
)
from aicloud.serving.runtime import ArtifactRuntime, Column, validate_rows
from aicloud.serving.service import handlers_of

COLS = [Column(f"f{i}", "float64") for i in range(4)]


# --- validation


def test_rows_in_signature_order_become_a_float_matrix() -> None:
    p = validate_rows(COLS, [[1, 2, 3, 4], [0.5, 1, 0, -1]])
    assert p.matrix is not None and p.matrix.shape == (2, 4) and p.rows == 2
    p = validate_rows(COLS, [{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "extra": "ignored"}])
    assert p.matrix is not None and p.matrix.tolist() == [[1, 2, 3, 4]]


@pytest.mark.parametrize(
    ("inputs", "field", "words"),
    [
        ([], "inputs", "empty batch"),
        ("x", "inputs", "expected a list"),
        ([[1, 2, 3, 4], [1, 2]], "inputs[1]", "expected 4 values, got 2"),
        ([[1, 2, 3, "a"]], "inputs[0][3] (f3)", "expected a number"),
        ([[1, 2, 3, "4"]], "inputs[0][3] (f3)", "expected a number"),
        ([[1, 2, 3, None]], "inputs[0][3] (f3)", "expected a number"),
        ([[1, 2, float("nan"), 4]], "inputs[0][2]", "finite"),
        ([[1, 2, 3, math.inf]], "inputs[0][3]", "finite"),
        ([{"f0": 1, "f1": 2, "f2": 3}], "inputs[0]", "missing column(s) 'f3'"),
        ([{"f0": 1, "f1": 2, "f2": 3, "f3": "x"}], "inputs[0].f3", "expected a number"),
        ([[1, 2, 3, True]], "inputs[0][3] (f3)", "got true (a boolean)"),
        ([[1.5, False, 3, 4]], "inputs[0][1] (f1)", "got false (a boolean)"),
        ([[True, True, False, True]], "inputs[0][0] (f0)", "a boolean"),
        ([{"f0": 1, "f1": 2, "f2": 3, "f3": False}], "inputs[0].f3", "a boolean"),
        ([5], "inputs[0]", "expected a row"),
    ],
)
def test_bad_rows_name_the_field(inputs: Any, field: str, words: str) -> None:
    with pytest.raises(BadRequestError) as info:
        validate_rows(COLS, inputs)
    assert info.value.status_code == 400
    assert info.value.details[0]["field"] == field, info.value.message
    assert words in info.value.message


def test_booleans_fill_bool_columns_only() -> None:
    cols = [Column("flag", "bool"), Column("x", "float64")]
    p = validate_rows(cols, [[True, 2.5], [False, 0]])
    assert p.matrix is not None and p.matrix.tolist() == [[1.0, 2.5], [0.0, 0.0]]
    with pytest.raises(BadRequestError, match=r"inputs\[0\]\[1\] \(x\): expected a number, got true"):
        validate_rows(cols, [[True, True]])
    p = validate_rows([Column("a", "bool"), Column("b", "bool")], [[True, False]])
    assert p.matrix is not None and p.matrix.tolist() == [[1.0, 0.0]]


def test_mixed_signature_keeps_records() -> None:
    cols = [Column("age", "int64"), Column("city", "string")]
    p = validate_rows(cols, [{"age": 3, "city": "Oslo"}, [4, "Rome"]][:1])
    assert p.records == [{"age": 3, "city": "Oslo"}]
    with pytest.raises(BadRequestError, match=r"inputs\[0\]\.city: expected a string"):
        validate_rows(cols, [{"age": 3, "city": None}])


# --- cache


def test_cache_is_lru_and_bounded_in_bytes() -> None:
    cache = ResponseCache(3 * (10 + ResponseCache.ENTRY_OVERHEAD))
    keys = [cache_key(b"r", str(i).encode()) for i in range(4)]
    for k in keys[:3]:
        cache.put(k, b"x" * 10)
    assert cache.get(keys[0]) == b"x" * 10  # 0 becomes most recent
    cache.put(keys[3], b"y" * 10)  # evicts 1, the least recently used
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.get(keys[3]) is not None
    assert cache.size <= cache.max_bytes and len(cache) == 3
    cache.put(cache_key(b"huge"), b"z" * 1000)  # larger than the cache: not stored
    assert len(cache) == 3
    assert cache_key(b"ab", b"c") != cache_key(b"a", b"bc")


# --- OIP


@pytest.mark.parametrize("binary", [True, False])
def test_oip_request_round_trip(binary: bool) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    words = np.array([b"a", b"bcd", b""], dtype=object)
    body, hl = encode_infer_request({"input": ("FP32", x), "w": ("BYTES", words)}, binary=binary)
    req = parse_infer_request(body, str(hl) if hl is not None else None)
    assert np.array_equal(req.inputs["input"], x) and req.datatypes["input"] == "FP32"
    if binary:
        assert list(req.inputs["w"]) == [b"a", b"bcd", b""]
    assert req.wants_binary("output") is True


def test_oip_binary_response_round_trip() -> None:
    body, hl = encode_infer_request({"input": ("FP32", np.zeros((2, 4), np.float32))})
    req = parse_infer_request(body, str(hl))
    out, header_length = encode_infer_response("m", "1", req, {"output": ("INT64", np.array([3, 4]))})
    assert header_length is not None
    assert decode_infer_response(out, header_length)["output"].tolist() == [3, 4]
    req.parameters = {}
    out, header_length = encode_infer_response("m", "1", req, {"output": ("INT64", np.array([3, 4]))})
    assert header_length is None and json.loads(out)["outputs"][0]["data"] == [3, 4]


@pytest.mark.parametrize(
    ("body", "header", "words"),
    [
        (b'{"inputs": []}', None, "non-empty list"),
        (b"{nope", None, "not valid JSON"),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1]}]}',
            None,
            "needs 2 values",
        ),
        (b'{"inputs": [{"name": "a", "datatype": "X", "shape": [1], "data": [1]}]}', None, "datatype"),
        (b'{"inputs": []}', "999", "larger than the request body"),
        (b'{"inputs": []}', "abc", "not an integer"),
    ],
)
def test_oip_bad_requests(body: bytes, header: str | None, words: str) -> None:
    with pytest.raises(BadRequestError, match=words):
        parse_infer_request(body, header)


def test_oip_binary_size_mismatch() -> None:
    header = json.dumps(
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}]}
    ).encode()
    with pytest.raises(BadRequestError, match="needs 8 bytes"):
        parse_infer_request(header + b"\0" * 4, str(len(header)))
    with pytest.raises(BadRequestError, match="do not fit"):
        parse_infer_request(header + b"\0" * 2, str(len(header)))


# --- Service and handler


class Greeter(Service):
    def setup(self) -> None:
        self.greeting = "hello"

    @handler
    def greet(self, name: str, times: int = 1) -> str:
        """Say hello."""
        return " ".join([f"{self.greeting} {name}"] * times)

    @handler
    async def add(self, a: float, b: float) -> dict[str, float]:
        return {"sum": a + b}

    @handler(batch=True, max_batch_size=4)
    def lengths(self, text: list[str]) -> list[int]:
        if "boom" in text:
            return [ValueError("boom") if t == "boom" else len(t) for t in text]  # type: ignore[misc]
        return [len(t) for t in text]


def test_handler_schemas_come_from_type_hints() -> None:
    found = handlers_of(Greeter)
    assert set(found) == {"greet", "add", "lengths"}
    schema = found["greet"].request_model.model_json_schema()
    assert schema["required"] == ["name"] and schema["properties"]["times"]["type"] == "integer"
    assert (
        found["lengths"].batch
        and found["lengths"].request_model.model_json_schema()["properties"]["text"]["type"] == "string"
    )


def test_handler_mistakes_are_refused_at_class_definition() -> None:
    with pytest.raises(TypeError, match="has no type hint"):

        class NoHints(Service):
            @handler
            def f(self, x) -> str:  # type: ignore[no-untyped-def]
                return str(x)

    with pytest.raises(TypeError, match="return type hint"):

        class NoReturn(Service):
            @handler
            def f(self, x: int):  # type: ignore[no-untyped-def]
                return x

    with pytest.raises(TypeError, match="list"):

        class BadBatch(Service):
            @handler(batch=True)
            def f(self, x: int) -> list[int]:
                return [x]

    with pytest.raises(TypeError, match="reserved"):

        class Reserved(Service):
            @handler
            def predict(self, x: int) -> int:
                return x

    class Empty(Service):
        pass

    with pytest.raises(TypeError, match="no @handler"):
        handlers_of(Empty)


# --- the app, in process


def _call(app: Any, requests: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as c:
            out = await asyncio.gather(*(c.request(m, p, **kw) for m, p, kw in requests))
        await app.close()
        return list(out)

    return asyncio.run(main())


AUTH = {"Authorization": "Bearer key"}


def test_service_app_routes_auth_and_openapi() -> None:
    app = build_app(ReplicaConfig(name="greeter", key="key"), service=Greeter, start=True)
    r = _call(
        app,
        [
            ("POST", "/greet", {"json": {"name": "ann", "times": 2}, "headers": AUTH}),
            ("POST", "/add", {"json": {"a": 1, "b": 2.5}, "headers": AUTH}),
            ("POST", "/lengths", {"json": {"text": "abc"}, "headers": AUTH}),
            ("POST", "/lengths", {"json": {"text": "boom"}, "headers": AUTH}),
            ("POST", "/greet", {"json": {"nom": "x"}, "headers": AUTH}),
            ("POST", "/greet", {"json": {"name": "x"}}),
            ("GET", "/openapi.json", {"headers": AUTH}),
            ("GET", "/v2/health/ready", {}),
            (
                "POST",
                "/greet",
                {"content": b"x" * 100, "headers": {**AUTH, "content-type": "application/json"}},
            ),
        ],
    )
    assert r[0].json() == "hello ann hello ann"
    assert r[1].json() == {"sum": 3.5}
    assert r[2].json() == 3
    assert r[3].status_code == 500 and r[3].json()["error"]["code"] == "internal"
    assert r[4].status_code == 400 and r[4].json()["error"]["details"][0]["field"] in ("name", "nom")
    assert r[5].status_code == 401 and r[5].json()["error"]["code"] == "unauthenticated"
    paths = r[6].json()["paths"]
    assert {"/greet", "/add", "/lengths"} <= set(paths)
    assert r[7].status_code == 200
    assert r[8].status_code == 400


def test_body_limit_and_draining() -> None:
    app = build_app(ReplicaConfig(name="greeter", key="key", max_body_bytes=100), service=Greeter, start=True)
    r = _call(app, [("POST", "/greet", {"json": {"name": "x" * 200}, "headers": AUTH})])
    assert r[0].status_code == 413 and r[0].json()["error"]["code"] == "payload_too_large"
    app = build_app(ReplicaConfig(name="greeter", key="key"), service=Greeter, start=True)
    app.begin_drain()
    r = _call(
        app, [("GET", "/v2/health/ready", {}), ("POST", "/greet", {"json": {"name": "x"}, "headers": AUTH})]
    )
    assert r[0].status_code == 503 and r[1].status_code == 503 and "Retry-After" in r[1].headers


def test_model_app_predict_cache_and_metrics(tmp_path: Path) -> None:
    from aicloud.artifacts.architectures import MLP
    from aicloud.artifacts.format import save_builtin

    sig = {"inputs": [{"name": f"f{i}", "dtype": "float64"} for i in range(4)], "outputs": []}
    save_builtin(
        tmp_path,
        MLP(4, [8], 3),
        {"task": "tabular-classification", "labels": ["a", "b", "c"], "signature": sig},
    )
    app = build_app(
        ReplicaConfig(name="m", key="key", cache_bytes=10_000), runtime=ArtifactRuntime(tmp_path), start=True
    )
    body = {"inputs": [[0, 1, 2, 3], [1, 1, 1, 1]]}
    r = _call(
        app,
        [
            ("POST", "/predict", {"json": body, "headers": AUTH}),
            ("POST", "/predict", {"json": {"inputs": [[1, 2]]}, "headers": AUTH}),
        ],
    )
    assert r[0].status_code == 200 and len(r[0].json()["outputs"]) == 2
    assert set(r[0].json()["outputs"]) <= {"a", "b", "c"}
    assert (
        r[1].status_code == 400 and "inputs[0]: expected 4 values, got 2" in r[1].json()["error"]["message"]
    )
    r2 = _call(
        app, [("POST", "/predict", {"json": body, "headers": AUTH}), ("GET", "/metrics", {"headers": AUTH})]
    )
    assert r2[0].json() == r[0].json()
    text = r2[1].text
    assert "aicloud_cache_hits_total 1.0" in text and "aicloud_requests_total" in text
    assert app.runtime is not None and app.runtime.outputs[0].datatype == "BYTES"


def test_batch_workers_split_the_replica_cpus() -> None:
    from pydantic import ValidationError

    from aicloud.executors.base import LaunchRequest, thread_env
    from aicloud.schemas.serving import DeploymentSpec

    assert DeploymentSpec(model="m", cpus=4, batch_workers=2).batch_workers == 2
    with pytest.raises(ValidationError, match="batch_workers"):
        DeploymentSpec(model="m", cpus=1, batch_workers=2)
    env = thread_env(LaunchRequest(job_id="r", argv=["x"], cpus=4, threads=2))
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2" and env["AICLOUD_CPUS"] == "4"
    assert thread_env(LaunchRequest(job_id="r", argv=["x"], cpus=3))["OMP_NUM_THREADS"] == "3"
    config = ReplicaConfig.from_spec({"batch_workers": 2, "max_batch_size": 16}, key="k")
    assert config.batch_workers == 2
    app = build_app(config, service=Greeter)
    assert {b.workers for b in app.state.batchers} == {2}


def test_handler_bad_bodies_name_the_field() -> None:
    app = build_app(ReplicaConfig(name="greeter", key="key"), service=Greeter, start=True)
    r = _call(
        app,
        [
            ("POST", "/greet", {"content": b"{nope", "headers": AUTH}),
            ("POST", "/greet", {"content": b"", "headers": AUTH}),
            ("POST", "/greet", {"json": {"name": "x", "extra": 1}, "headers": AUTH}),
            ("POST", "/greet", {"json": {"name": "x", "times": "many"}, "headers": AUTH}),
            ("POST", "/lengths", {"json": {"text": ["a", "b"]}, "headers": AUTH}),
            ("GET", "/greet", {"headers": AUTH}),
        ],
    )
    fields = [x.json()["error"]["details"][0]["field"] for x in r[:5]]
    assert [x.status_code for x in r[:5]] == [400] * 5
    assert fields == ["body", "body", "extra", "times", "text"]
    assert all("Traceback" not in x.text for x in r)
    assert r[5].status_code == 405 and r[5].json()["error"]["code"] == "method_not_allowed"
