"""The endpoint proxy over real HTTP: a gateway app and echo replicas on uvicorn in threads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from aicloud.entities import Role, Token, Workspace
from aicloud.gateway.proxy import Gateway, make_gateway_router
from aicloud.gateway.registry import Endpoint, EndpointRegistry, ReplicaSlot
from aicloud.server.app import install_error_handlers
from aicloud.server.auth import PrincipalCache, hash_secret, mint_token
from aicloud.testing.server import free_port

WS, OTHER_WS = "ws_a", "ws_b"


# -- replicas: a raw ASGI echo app that records what it received --------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: str
    authorization: str | None
    headers: dict[str, str]
    length: int


class EchoReplica:
    """``POST /echo`` answers the body back; anything else answers a JSON summary of the request.

    ``?sleep=<s>`` delays the answer; ``?status=<n>`` sets the status (replica errors pass through).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        digest, length, chunks = hashlib.sha256(), 0, []
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            length += len(body)
            if scope["path"] == "/echo":
                chunks.append(body)
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        self.seen.append(
            Seen(scope["method"], scope["path"], query, headers.get("authorization"), headers, length)
        )
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if "sleep" in params:
            await asyncio.sleep(float(params["sleep"]))
        status = int(params.get("status", 200))
        if scope["path"] == "/echo":
            out_headers = [(b"content-type", headers.get("content-type", "").encode())]
            if "inference-header-content-length" in headers:
                out_headers.append(
                    (b"inference-header-content-length", headers["inference-header-content-length"].encode())
                )
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            for chunk in chunks:  # no content-length: the gateway must stream it
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        payload = json.dumps(
            {
                "replica": self.name,
                "path": scope["path"],
                "query": query,
                "length": length,
                "sha256": digest.hexdigest(),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-replica", self.name.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload if scope["method"] != "HEAD" else b""})


class ThreadServer:
    """A uvicorn server on a free port in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", ws="none", lifespan="auto"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# -- the gateway app and its fake state ---------------------------------------------------------


class _Tokens:
    def __init__(self) -> None:
        self.rows: dict[str, Token] = {}

    def get(self, token_id: str) -> Token | None:
        return self.rows.get(token_id)


class _Workspaces:
    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.rows = {w: Workspace(w, w, now) for w in (WS, OTHER_WS)}

    def get(self, workspace_id: str) -> Workspace:
        return self.rows[workspace_id]


@dataclass
class FakeStore:
    tokens: _Tokens = field(default_factory=_Tokens)
    workspaces: _Workspaces = field(default_factory=_Workspaces)

    def mint(self, workspace: str, role: Role = Role.VIEWER, scope: str | None = None) -> str:
        token_id, bearer, secret_hash = mint_token()
        assert hash_secret(bearer.split("_", 3)[3]) == secret_hash
        self.tokens.rows[token_id] = Token(
            token_id, workspace, f"t-{token_id}", role, secret_hash, datetime.now(UTC), scope=scope
        )
        return bearer


@dataclass
class Host:
    store: FakeStore
    principals: PrincipalCache
    gateway: Gateway


def gateway_app(host: Host) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await host.gateway.aclose()

    app = FastAPI(lifespan=lifespan)
    app.state.aicloud = host
    install_error_handlers(app)
    app.include_router(make_gateway_router())
    return app


@dataclass
class World:
    registry: EndpointRegistry
    store: FakeStore
    host: Host
    gateway: ThreadServer
    a: EchoReplica
    b: EchoReplica
    a_url: str
    b_url: str
    token: str  # a viewer of WS

    def url(self, name: str, path: str) -> str:
        return f"{self.gateway.url}/v1/endpoints/{name}/{path}"

    def endpoint(self, name: str, *slots: ReplicaSlot, workspace: str = WS) -> Endpoint:
        ep = self.registry.ensure(f"dep-{name}", workspace, name, f"key-{name}")
        for slot in slots:
            self.registry.set_replica(ep, slot)
        return ep

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    a, b = EchoReplica("a"), EchoReplica("b")
    sa, sb = ThreadServer(a).start(), ThreadServer(b).start()
    registry = EndpointRegistry()
    store = FakeStore()
    host = Host(store, PrincipalCache(ttl=60), Gateway(registry))
    gw = ThreadServer(gateway_app(host)).start()
    yield World(registry, store, host, gw, a, b, sa.url, sb.url, store.mint(WS))
    for server in (gw, sa, sb):
        server.stop()


@pytest.fixture(autouse=True)
def _fresh(world: World) -> None:
    for ep in world.registry.all():
        world.registry.remove(ep.deployment_id)
    world.registry.on_demand = lambda: None
    world.a.seen.clear()
    world.b.seen.clear()


def slot(rid: str, url: str, generation: int = 1, ready: bool = True, draining: bool = False) -> ReplicaSlot:
    return ReplicaSlot(rid, url, generation, ready=ready, draining=draining)


def error_of(response: httpx.Response) -> dict[str, Any]:
    err: dict[str, Any] = response.json()["error"]
    assert set(err) == {"code", "message", "details"}
    return err


# -- auth -----------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.get(world.url("alpha", "v2/health/ready"))
    assert r.status_code == 401 and error_of(r)["code"] == "unauthenticated"
    r = httpx.get(world.url("alpha", "v2"), headers={"Authorization": "Bearer aic_nope"})
    assert r.status_code == 401 and error_of(r)["code"] == "unauthenticated"
    forged = world.token[:-4] + "AAAA"
    r = httpx.get(world.url("alpha", "v2"), headers=world.auth(forged))
    assert r.status_code == 401
    assert world.a.seen == []


def test_workspace_token_of_any_role_calls_its_endpoints(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    for role in Role:
        r = httpx.post(
            world.url("alpha", "predict"),
            json={"inputs": [[1]]},
            headers=world.auth(world.store.mint(WS, role)),
        )
        assert r.status_code == 200, r.text
    other = world.store.mint(OTHER_WS, Role.ADMIN)
    r = httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth(other))
    assert r.status_code == 404
    err = error_of(r)
    assert err["code"] == "not_found" and "alpha" in err["message"]


def test_endpoint_token_is_limited_to_its_endpoint(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    world.endpoint("beta", slot("r2", world.b_url))
    scoped = world.store.mint(WS, Role.VIEWER, scope="endpoint:alpha")
    assert httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth(scoped)).status_code == 200
    r = httpx.post(world.url("beta", "predict"), json={}, headers=world.auth(scoped))
    assert r.status_code == 404 and "beta" in error_of(r)["message"]
    assert world.b.seen == []


def test_replica_tokens_cannot_call_endpoints(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    replica = world.store.mint(WS, Role.VIEWER, scope="deployment:dep_0123456789")
    r = httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth(replica))
    assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"


def test_unknown_deployment_is_404_naming_it(world: World) -> None:
    r = httpx.get(world.url("ghost", "v2"), headers=world.auth())
    assert r.status_code == 404
    err = error_of(r)
    assert err["code"] == "not_found" and "ghost" in err["message"]


def test_tokens_are_cached(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    token = world.store.mint(WS)
    assert httpx.get(world.url("alpha", "v2"), headers=world.auth(token)).status_code == 200
    world.store.tokens.rows.clear()  # the database no longer answers for it
    try:
        assert httpx.get(world.url("alpha", "v2"), headers=world.auth(token)).status_code == 200
    finally:
        world.host.principals = PrincipalCache(ttl=60)
        world.token = world.store.mint(WS)


# -- forwarding -----------------------------------------------------------------------------------


def test_replica_key_replaces_the_callers_token_and_path_query_pass(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.get(world.url("alpha", "v2/models/alpha%2Fx/ready?x=1&y=a%20b"), headers=world.auth())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "x-replica" not in r.headers  # only the relevant response headers come back
    (seen,) = world.a.seen
    assert seen.authorization == "Bearer key-alpha"
    assert seen.path == "/v2/models/alpha/x/ready"  # uvicorn decodes %2F in scope["path"]
    assert seen.query == "x=1&y=a%20b"
    assert "cookie" not in seen.headers


def test_head_is_forwarded(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.head(world.url("alpha", "v2/health/ready"), headers=world.auth())
    assert r.status_code == 200 and r.content == b""
    assert world.a.seen[0].method == "HEAD"


def test_replica_errors_pass_through_unchanged(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.post(world.url("alpha", "predict?status=400"), json={}, headers=world.auth())
    assert r.status_code == 400 and r.json()["replica"] == "a"


def test_binary_tensor_body_is_byte_identical(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    header = b'{"inputs":[{"name":"x","shape":[4],"datatype":"BYTES","parameters":{"binary_data_size":260}}]}'
    body = header + os.urandom(260)
    r = httpx.post(
        world.url("alpha", "echo"),
        content=body,
        headers={
            **world.auth(),
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["inference-header-content-length"] == str(len(header))
    assert r.headers["content-type"] == "application/octet-stream"


def test_large_bodies_stream_both_ways(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    body = os.urandom(20 * 1024 * 1024)
    r = httpx.post(world.url("alpha", "infer"), content=body, headers=world.auth(), timeout=60)
    assert r.status_code == 200
    assert r.json()["length"] == len(body) and r.json()["sha256"] == hashlib.sha256(body).hexdigest()
    with httpx.stream(
        "POST",
        world.url("alpha", "echo"),
        content=iter([body[:7_000_000], body[7_000_000:]]),
        headers=world.auth(),
        timeout=60,
    ) as r:
        assert r.status_code == 200
        got = b"".join(r.iter_bytes())
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    ep = world.registry.get(WS, "alpha")
    assert ep is not None and ep.inflight == 0


def test_least_outstanding_spreads_concurrent_load(world: World) -> None:
    ep = world.endpoint("alpha", slot("r1", world.a_url), slot("r2", world.b_url))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=world.auth(), timeout=30) as client:
            return await asyncio.gather(
                *(client.post(world.url("alpha", "predict?sleep=0.1"), json={}) for _ in range(20))
            )

    rs = asyncio.run(burst())
    assert all(r.status_code == 200 for r in rs)
    assert len(world.a.seen) == 10 and len(world.b.seen) == 10
    assert ep.inflight == 0 and all(s.inflight == 0 for s in ep.replicas.values())
    assert time.monotonic() - ep.last_request < 5


def test_draining_replica_gets_nothing(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url, generation=2, draining=True), slot("r2", world.b_url))
    for _ in range(5):
        assert httpx.get(world.url("alpha", "v2"), headers=world.auth()).json()["replica"] == "b"
    assert world.a.seen == []


# -- cold start -----------------------------------------------------------------------------------


def test_cold_request_is_held_until_a_replica_is_ready(world: World) -> None:
    ep = world.endpoint("cold")
    demanded = threading.Event()
    world.registry.on_demand = demanded.set

    def controller() -> None:
        assert demanded.wait(10)
        assert ep.start_requested and ep.waiting == 1
        time.sleep(0.3)
        world.registry.set_replica(ep, slot("r1", world.a_url))

    thread = threading.Thread(target=controller)
    thread.start()
    started = time.monotonic()
    r = httpx.post(world.url("cold", "predict"), json={"inputs": []}, headers=world.auth(), timeout=30)
    thread.join()
    assert r.status_code == 200, r.text
    assert r.json()["replica"] == "a"
    assert time.monotonic() - started >= 0.3
    assert ep.waiting == 0 and ep.inflight == 0


def test_hold_timeout_is_503_saying_the_deployment_could_not_start(world: World) -> None:
    ep = world.endpoint("stuck")
    ep.timeout_s = 0.3
    r = httpx.get(world.url("stuck", "v2"), headers=world.auth())
    assert r.status_code == 503
    err = error_of(r)
    assert err["code"] == "unavailable" and "could not start" in err["message"]
    assert ep.waiting == 0 and ep.start_requested


# -- retries --------------------------------------------------------------------------------------


def test_refused_connection_retries_on_another_replica(world: World) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # The dead replica is newer, so it wins the tie and is tried first.
    ep = world.endpoint("alpha", slot("dead", dead, generation=2), slot("r2", world.b_url))
    r = httpx.post(world.url("alpha", "predict"), json={"inputs": [[1]]}, headers=world.auth())
    assert r.status_code == 200 and r.json()["replica"] == "b"
    big = os.urandom(3 * 1024 * 1024)  # streamed, but not a byte was sent to the dead replica
    world.host.gateway._suspect.clear()
    r = httpx.post(world.url("alpha", "infer"), content=big, headers=world.auth(), timeout=30)
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(big).hexdigest()
    assert all(s.inflight == 0 for s in ep.replicas.values())


def _hang_up_server() -> tuple[str, socket.socket]:
    """A 'replica' that accepts a connection, reads the request, and closes without answering."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", sock


def test_replica_that_hangs_up_is_retried_elsewhere(world: World) -> None:
    url, sock = _hang_up_server()
    try:
        world.endpoint("alpha", slot("bad", url, generation=2), slot("r2", world.b_url))
        for _ in range(3):
            r = httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth())
            assert r.status_code == 200 and r.json()["replica"] == "b"
    finally:
        sock.close()


def test_only_replica_unreachable_is_503_in_error_shape(world: World) -> None:
    world.endpoint("alpha", slot("dead", f"http://127.0.0.1:{free_port()}"))
    r = httpx.get(world.url("alpha", "v2"), headers=world.auth())
    assert r.status_code == 503
    err = error_of(r)
    assert err["code"] == "unavailable" and "alpha" in err["message"]
