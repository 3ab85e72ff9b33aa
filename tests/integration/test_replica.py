"""The replica as a real process: predict, OIP v2 via tritonclient, bad input, batching, drain, services.

The model folder is written with ``save_builtin`` (no training) and served with the test-only
``AICLOUD_REPLICA_MODEL_DIR``; a Service file with ``AICLOUD_REPLICA_SERVICE``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from aicloud.wire import frames as wire
from aicloud.wire.tcp import free_port

from helpers import assert_error, assert_oip_error

KEY = "test-replica-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
WIDTH = 64


class Replica:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "replica.log"
        full = {
            **os.environ,
            "AICLOUD_URL": "http://127.0.0.1:9",  # nothing: the test env vars skip downloading
            "AICLOUD_TOKEN": "unused",
            "AICLOUD_REPLICA_PORT": str(self.port),
            "AICLOUD_REPLICA_KEY": KEY,
            "AICLOUD_REPLICA_ID": "r1",
            "OMP_NUM_THREADS": "1",
            **env,
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aicloud.serving.replica"],
                cwd=workdir,
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, headers=AUTH, timeout=30)

    def wait_ready(self, timeout: float = 60) -> Replica:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica not ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_model(folder: Path) -> Path:
    from aicloud.artifacts.architectures import MLP
    from aicloud.artifacts.format import save_builtin
    from aicloud.artifacts.preprocess import Preprocessor

    names = [f"pixel_{i}" for i in range(WIDTH)]
    pre = Preprocessor(features=names, standardize={n: [0.0, 1.0] for n in names})
    sig = {
        "inputs": [{"name": n, "dtype": "float64"} for n in names],
        "outputs": [{"name": "label", "dtype": "int64"}],
    }
    config = {
        "task": "tabular-classification",
        "preprocessing": pre.to_config(),
        "signature": sig,
        "labels": list(range(10)),
    }
    return save_builtin(folder, MLP(WIDTH, [32], 10), config)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def replica(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    spec = {"max_batch_size": 8, "max_wait_ms": 5, "max_queue": 256, "timeout_s": 30}
    r = Replica(
        tmp_path_factory.mktemp("replica"),
        {
            "AICLOUD_REPLICA_MODEL_DIR": str(model_dir),
            "AICLOUD_DEPLOYMENT_NAME": "digits",
            "AICLOUD_DEPLOYMENT_SPEC": json.dumps(spec),
        },
    ).wait_ready()
    yield r
    r.stop()


def rows(n: int) -> list[list[float]]:
    rng = np.random.default_rng(n)
    return rng.uniform(0, 16, size=(n, WIDTH)).round(2).tolist()


def expected(model_dir: Path, x: list[list[float]]) -> list[int]:
    from aicloud.artifacts.loader import load_model

    return [int(v) for v in load_model(model_dir)(np.asarray(x))]


def test_predict(replica: Replica, model_dir: Path) -> None:
    x = rows(5)
    r = replica.http.post("/predict", json={"inputs": x})
    assert r.status_code == 200, r.text
    assert r.json() == {"outputs": expected(model_dir, x)}
    names = [f"pixel_{i}" for i in range(WIDTH)]
    r = replica.http.post("/predict", json={"inputs": [dict(zip(names, row, strict=True)) for row in x]})
    assert r.json() == {"outputs": expected(model_dir, x)}
    assert_error(httpx.post(f"{replica.url}/predict", json={"inputs": x}), 401, "unauthenticated")
    assert_error(httpx.get(f"{replica.url}/metrics", headers={"Authorization": "Bearer wrong"}), 401)


def test_oip_with_tritonclient(replica: Replica, model_dir: Path) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{replica.port}")
    try:
        assert client.is_server_live()
        assert client.is_model_ready("digits", headers=AUTH)
        meta = client.get_model_metadata("digits", headers=AUTH)
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, WIDTH]}]
        assert meta["outputs"] == [{"name": "output", "datatype": "INT64", "shape": [-1]}]
        x = np.asarray(rows(4), dtype=np.float32)
        want = expected(model_dir, x.astype(np.float64).tolist())
        for binary in (True, False):
            inp = triton.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = triton.InferRequestedOutput("output", binary_data=binary)
            result = client.infer("digits", [inp], outputs=[out], headers=dict(AUTH))
            assert result.as_numpy("output").tolist() == want
        # tritonclient writes Inference-Header-Content-Length into the headers dict it is given: copy it
        result = client.infer("digits", [inp], headers=dict(AUTH))  # no outputs named: binary by default
        assert result.as_numpy("output").tolist() == want
        assert not client.is_model_ready("other", headers=AUTH)
    finally:
        client.close()
    extensions = replica.http.get("/v2").json()["extensions"]
    assert extensions == ["binary_tensor_data", "model_configuration", "statistics"]


def test_bad_inputs_answer_4xx_and_the_replica_stays_healthy(replica: Replica) -> None:
    h = replica.http
    bad_json = h.post("/predict", content=b'{"inputs": [[1,', headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_error(bad_json, 400)["message"]
    err = assert_error(h.post("/predict", json={"inputs": [*rows(3), [1.0] * 10]}), 400)
    assert err["message"] == f"inputs[3]: expected {WIDTH} values, got 10"
    nan = h.post("/predict", content=json.dumps({"inputs": [[float("nan")] * WIDTH]}).encode())
    assert "finite" in assert_error(nan, 400)["message"]
    assert "empty batch" in assert_error(h.post("/predict", json={"inputs": []}), 400)["message"]
    assert_error(h.post("/predict", json={"rows": []}), 400)
    assert_error(h.post("/predict", json={"inputs": [["a"] * WIDTH]}), 400)
    big = h.post("/predict", content=b"x" * (100 * 1024 * 1024))
    assert_error(big, 413, "payload_too_large")
    header = json.dumps({"inputs": []}).encode()
    lying = h.post(
        "/v2/models/digits/infer",
        content=header,
        headers={"Inference-Header-Content-Length": str(len(header) + 50)},
    )
    assert "larger than the request body" in assert_oip_error(lying, 400)  # OIP: {"error": "<message>"}
    shape = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert_oip_error(h.post("/v2/models/digits/infer", json=shape), 400)
    assert_oip_error(h.post("/v2/models/nope/infer", json=shape), 404)
    assert httpx.get(f"{replica.url}/v2/health/ready").status_code == 200
    assert h.post("/predict", json={"inputs": rows(1)}).status_code == 200


def _histogram(text: str, name: str) -> dict[str, float]:
    pattern = re.compile(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', re.M)
    return {le: float(v) for le, v in pattern.findall(text)}


def test_batching_never_exceeds_max_batch_size(replica: Replica) -> None:
    before = _histogram(replica.http.get("/metrics").text, "aicloud_batch_size")
    barrier = threading.Barrier(32)

    def one(i: int) -> int:
        with httpx.Client(base_url=replica.url, headers=AUTH, timeout=30) as c:
            barrier.wait()
            return c.post("/predict", json={"inputs": rows(1)}).status_code

    with ThreadPoolExecutor(32) as pool:
        assert set(pool.map(one, range(32))) == {200}
    text = replica.http.get("/metrics").text
    after = _histogram(text, "aicloud_batch_size")
    batches = after["+Inf"] - before.get("+Inf", 0)
    assert after["8.0"] - before.get("8.0", 0) == batches  # every batch had at most 8 rows
    assert batches < 32  # and some requests were grouped
    assert 'aicloud_requests_total{code="200",route="/predict"}' in text
    assert "aicloud_queue_seconds_bucket" in text and "aicloud_inflight_requests" in text
    # one model-call time per batch, and the calls took time
    assert _histogram(text, "aicloud_batch_seconds")["+Inf"] == after["+Inf"]
    assert float(re.search(r"^aicloud_batch_seconds_sum ([0-9.e+-]+)$", text, re.M).group(1)) > 0


SERVICE = """
import time

from aicloud import Service, handler


class Echo(Service):
    def setup(self) -> None:
        self.calls = 0

    @handler
    def echo(self, text: str) -> str:
        return text

    @handler
    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    @handler(batch=True, max_batch_size=4)
    def upper(self, text: list[str]) -> list[str]:
        return [t.upper() for t in text]
"""


@pytest.fixture
def service_replica(tmp_path: Path) -> Iterator[Replica]:
    (tmp_path / "svc.py").write_text(textwrap.dedent(SERVICE))
    r = Replica(
        tmp_path,
        {"AICLOUD_REPLICA_SERVICE": f"{tmp_path / 'svc.py'}:Echo", "AICLOUD_DEPLOYMENT_NAME": "echo"},
    ).wait_ready()
    yield r
    r.stop()


def test_service_handlers_and_openapi(service_replica: Replica) -> None:
    h = service_replica.http
    assert h.post("/echo", json={"text": "hi"}).json() == "hi"
    assert h.post("/upper", json={"text": "hi"}).json() == "HI"
    assert_error(h.post("/echo", json={"txt": "hi"}), 400)
    assert_error(h.post("/echo", content=b"{", headers={"content-type": "application/json"}), 400)
    schema: dict[str, Any] = h.get("/openapi.json").json()
    assert {"/echo", "/slow", "/upper"} <= set(schema["paths"])
    body = schema["paths"]["/echo"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("Echo_echo_Request")


def test_sigterm_drains_in_flight_requests(service_replica: Replica) -> None:
    result: dict[str, Any] = {}

    def slow() -> None:
        with httpx.Client(base_url=service_replica.url, headers=AUTH, timeout=30) as c:
            r = c.post("/slow", json={"seconds": 1.5})
            result["status"], result["body"] = r.status_code, r.json()

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.4)
    service_replica.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert httpx.get(f"{service_replica.url}/v2/health/ready").status_code == 503
    new = httpx.post(f"{service_replica.url}/echo", json={"text": "x"}, headers=AUTH)
    assert_error(new, 503)
    t.join(10)
    assert result == {"status": 200, "body": "done"}
    assert service_replica.proc.wait(15) == 0


# --- the gateway channel (aicloud.wire.frames) on the replica's port


class RawChannel:
    """The gateway's side of a channel, by hand: hello, request frames, FULL answers."""

    def __init__(self, port: int, key: str = KEY) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(wire.hello(f"127.0.0.1:{port}", key))
        ack = b""
        while len(ack) < len(wire.ACK):
            chunk = self.sock.recv(len(wire.ACK) - len(ack))
            assert chunk, f"closed during the hello, after {ack!r}"
            ack += chunk
        assert ack == wire.ACK
        self.decoder = wire.Decoder()

    @staticmethod
    def request(sid: int, method: str, target: str, body: Any = None) -> bytes:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {target}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
        return wire.frame_with_head(wire.REQUEST, sid, head.encode(), data)

    def answers(self, n: int) -> dict[int, tuple[int, Any]]:
        """The next ``n`` FULL answers: stream id → (status, JSON body)."""
        out: dict[int, tuple[int, Any]] = {}
        while len(out) < n:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the replica closed the channel"
            for kind, sid, payload in self.decoder.feed(chunk):
                assert kind == wire.FULL
                head, body = wire.split_head(payload)
                status, _ = wire.parse_head(head)
                out[sid] = (int(status), json.loads(body))
        return out

    def closed(self) -> bool:
        return self.sock.recv(1 << 16) == b""

    def __enter__(self) -> RawChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_channel_carries_concurrent_requests_and_each_answer_keeps_its_own_status(
    replica: Replica, model_dir: Path
) -> None:
    x1, x2 = rows(3), rows(5)
    with RawChannel(replica.port) as ch:
        ch.sock.sendall(
            ch.request(1, "POST", "/predict", {"inputs": x1})
            + ch.request(2, "POST", "/predict", {"inputs": [[float("nan")] * WIDTH]})
            + ch.request(3, "POST", "/predict", {"inputs": x2})
            + ch.request(4, "GET", "/v2/models/digits")
        )
        got = ch.answers(4)
    assert got[1][0] == 200 and got[1][1]["outputs"] == expected(model_dir, x1)
    assert got[3][0] == 200 and got[3][1]["outputs"] == expected(model_dir, x2)
    assert got[2][0] == 400 and "finite" in got[2][1]["error"]["message"]
    assert got[4][0] == 200 and got[4][1]["name"] == "digits"


def test_channel_with_a_wrong_key_gets_401_on_every_request(replica: Replica) -> None:
    with RawChannel(replica.port, key="not-the-key") as ch:
        ch.sock.sendall(ch.request(7, "POST", "/predict", {"inputs": rows(1)}))
        status, body = ch.answers(1)[7]
    assert status == 401 and body["error"]["code"] == "unauthenticated"


def predictions_served(replica: Replica) -> float:
    text = replica.http.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aicloud_requests_total{") and 'route="/predict"' in line
    )


def test_garbage_on_a_channel_closes_it_and_the_replica_stays_healthy(replica: Replica) -> None:
    with RawChannel(replica.port) as ch:
        ch.sock.sendall(b"\x00\x00\x00\x01\x00\x00\x00\x01\x63x")  # frame kind 99
        assert ch.closed()
    before = predictions_served(replica)
    with RawChannel(replica.port) as ch:  # a request whose head runs past its frame, then a good one
        bad = wire.frame(wire.REQUEST, 1, b"\x00\x00\x01\x00POST /predict\r\n")
        ch.sock.sendall(bad + ch.request(2, "POST", "/predict", {"inputs": rows(1)}))
        assert ch.closed()
    # closed at the bad one: the good one behind it is not run (it would be queued before this one)
    assert replica.http.post("/predict", json={"inputs": rows(2)}).status_code == 200
    assert predictions_served(replica) == before + 1
    assert replica.http.post("/predict", json={"inputs": rows(2)}).status_code == 200
    assert httpx.get(f"{replica.url}/v2/health/ready").status_code == 200


def test_sigterm_answers_channel_requests_in_flight_then_closes_the_channel(service_replica: Replica) -> None:
    with RawChannel(service_replica.port) as ch:
        ch.sock.sendall(ch.request(1, "POST", "/slow", {"seconds": 1.5}))
        time.sleep(0.4)
        service_replica.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ch.sock.sendall(ch.request(2, "POST", "/echo", {"text": "late"}))  # draining: 503, as over HTTP
        got = ch.answers(2)
        assert got[1] == (200, "done")
        assert got[2][0] == 503 and "draining" in got[2][1]["error"]["message"]
        assert ch.closed()
    assert service_replica.proc.wait(20) == 0
