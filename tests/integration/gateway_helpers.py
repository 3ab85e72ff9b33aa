"""Shared by the gateway tests: echo replicas and a gateway on uvicorn in threads, a fake token store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from aicloud.auth import PrincipalCache, hash_secret, mint_token
from aicloud.entities import Role, Token, Workspace
from aicloud.gateway.asgi import EndpointApp
from aicloud.gateway.proxy import Gateway
from aicloud.gateway.registry import Endpoint, EndpointRegistry, ReplicaSlot
from aicloud.serving.channel import SniffingProtocol
from aicloud.wire.tcp import free_port

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
    client: int  # the gateway's source port: one per connection


class EchoReplica:
    """``POST /echo`` answers the body back; ``GET /stream`` answers a line every 10 ms until the
    caller goes away (``disconnects`` counts those, and callers gone during a sleep); anything else
    answers a JSON summary of the request. ``?sleep=<s>`` delays the answer; ``?status=<n>`` sets
    the status (replica errors pass through); ``?size=<n>`` answers n bytes (rounded down to 256)
    in one piece.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.disconnects = 0

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
        client = scope["client"][1] if scope.get("client") else 0
        self.seen.append(
            Seen(scope["method"], scope["path"], query, headers.get("authorization"), headers, length, client)
        )
        if scope["path"] == "/stream":
            await self._stream(receive, send)
            return
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if "sleep" in params:  # a caller that hangs up meanwhile is counted in disconnects
            gone = asyncio.ensure_future(receive())  # the body was read: the next message is the disconnect
            await asyncio.wait({gone}, timeout=float(params["sleep"]))
            if gone.done():
                self.disconnects += 1
                return
            gone.cancel()
        status = int(params.get("status", 200))
        if "size" in params:  # a large answer of a known length, sent in one piece
            blob = bytes(range(256)) * (int(params["size"]) // 256)
            head = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(blob))]
            await send({"type": "http.response.start", "status": status, "headers": head})
            await send({"type": "http.response.body", "body": blob})
            return
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

    async def _stream(self, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(receive())  # the body was read: the next message is the disconnect
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for i in range(3000):  # 30 s at most
            if gone.done():
                self.disconnects += 1
                return
            await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
            await asyncio.sleep(0.01)
        gone.cancel()
        await send({"type": "http.response.body", "body": b""})


class ThreadServer:
    """A uvicorn server on a free port in a background thread."""

    def __init__(self, app: Any, http: Any = SniffingProtocol) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws="none",
            lifespan="auto",
            http=http,  # by default as a replica serves: HTTP, and the gateway channel
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


def gateway_app(host: Host) -> Any:
    """The gateway's ASGI app as the control plane runs it, plus a lifespan that closes the gateway."""
    endpoints = EndpointApp(host_of=lambda scope: host)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await host.gateway.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await endpoints(scope, receive, send)

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
    replica_servers: tuple[ThreadServer, ...] = ()  # a's, then b's

    def url(self, name: str, path: str) -> str:
        return f"{self.gateway.url}/v1/endpoints/{name}/{path}"

    def endpoint(self, name: str, *slots: ReplicaSlot, workspace: str = WS) -> Endpoint:
        ep = self.registry.ensure(f"dep-{name}", workspace, name)
        for slot in slots:
            slot.key = slot.key or f"key-{name}"  # the bearer the echo replicas see
            self.registry.set_replica(ep, slot)
        return ep

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


@contextmanager
def make_world(**gateway_options: Any) -> Iterator[World]:
    """Two echo replicas and a gateway (``Gateway(registry, **gateway_options)``), all serving."""
    a, b = EchoReplica("a"), EchoReplica("b")
    sa, sb = ThreadServer(a).start(), ThreadServer(b).start()
    registry = EndpointRegistry()
    store = FakeStore()
    host = Host(store, PrincipalCache(ttl=60), Gateway(registry, **gateway_options))
    gw = ThreadServer(gateway_app(host)).start()
    try:
        yield World(registry, store, host, gw, a, b, sa.url, sb.url, store.mint(WS), (sa, sb))
    finally:
        for server in (gw, sa, sb):
            server.stop()


def slot(
    rid: str, url: str, generation: int = 1, ready: bool = True, draining: bool = False, key: str = ""
) -> ReplicaSlot:
    return ReplicaSlot(rid, url, generation, ready=ready, draining=draining, key=key)


def error_of(response: httpx.Response) -> dict[str, Any]:
    err: dict[str, Any] = response.json()["error"]
    assert set(err) == {"code", "message", "details"}
    return err
