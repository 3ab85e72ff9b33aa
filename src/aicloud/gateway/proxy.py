"""The endpoint proxy: ``/v1/endpoints/{name}/{path}`` on the control plane, forwarded to replicas.

One request, top to bottom:

1. :func:`require_endpoint_caller` authenticates the bearer (through the app's
   ``PrincipalCache``, so the hot path does not touch the database) and finds the
   deployment's :class:`~aicloud.gateway.registry.Endpoint` in the caller's workspace.
   Any workspace token (role viewer or more: predicting is a read) may call any endpoint
   of its workspace; a token scoped ``endpoint:<name>`` may call only that endpoint.
   Other scopes (``job:``, ``deployment:``) act as their workspace's tokens, so a job
   or a service can call an endpoint. An unknown name, or a name an endpoint token is
   not for, is 404 (the answer does not tell a scoped token which other endpoints exist).
2. :meth:`Gateway.forward` picks the least-outstanding ready replica. With none ready it
   holds the request (``Endpoint.waiting``, ``EndpointRegistry.demand``) until one is, up
   to the endpoint's ``timeout_s`` (else :data:`HOLD_TIMEOUT_S`); only then is it 503.
3. The request goes out on one pooled keep-alive ``httpx.AsyncClient`` with the replica
   key as bearer. Bodies up to :data:`BUFFER_LIMIT` bytes are read once and sent in one
   write; larger or chunked bodies stream through. Responses with a known length up to
   the same limit are read in one go; others stream back as they arrive.
4. If the connection fails before any response (refused, reset, closed without an
   answer), the request is retried once on another ready replica, provided its body can
   be sent again: a buffered body always can, a streamed one only if none of it was sent
   yet. A replica that refused a connection is avoided for :data:`SUSPECT_S` seconds.

Errors the gateway raises itself use aicloud's error shape; whatever a replica answers
(errors included) passes through unchanged.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

import anyio
import httpx
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aicloud.entities import Role
from aicloud.errors import NotFoundError, PayloadTooLargeError, PermissionDeniedError, UnavailableError
from aicloud.gateway.registry import Endpoint, EndpointRegistry, ReplicaSlot
from aicloud.server.auth import Principal, PrincipalCache, authenticate
from aicloud.store import MetadataStore

if importlib.util.find_spec("sniffio") is None:
    # httpcore runs ``import sniffio`` several times per request; without the package every
    # attempt is a full, uncached search of sys.path (~0.2 ms each, most of the proxy's cost).
    # A None entry makes the miss instant and changes nothing else: the module is not there.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

#: How long a request for a deployment with no ready replica waits for one (unless the
#: endpoint carries its deployment's ``timeout_s``).
HOLD_TIMEOUT_S = 120.0
#: How often a held request looks for a ready replica.
HOLD_POLL_S = 0.02
#: Bodies (request or response) up to this size are read whole; larger ones stream.
BUFFER_LIMIT = 1 << 20
#: Largest request body the gateway forwards (the replicas' default limit too).
MAX_BODY_BYTES = 64 << 20
#: Idle time after which the gateway stops waiting for the next byte from a replica. Replicas
#: answer 504 themselves after the deployment's ``timeout_s``; this only guards against a hang.
READ_TIMEOUT_S = 300.0
#: How long a replica that refused a connection is skipped while another one is ready.
SUSPECT_S = 1.0

_REQUEST_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"accept",
        b"accept-encoding",
        b"inference-header-content-length",
        b"x-request-id",
    }
)
_RESPONSE_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"inference-header-content-length",
        b"retry-after",
        b"x-request-id",
    }
)
#: Failures that happen before a replica answered anything, so a retry cannot repeat work
#: the caller would see twice (a replica killed mid-request never answered).
_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


class GatewayHost(Protocol):
    """What the gateway needs from the app state (``request.app.state.aicloud``)."""

    store: MetadataStore
    principals: PrincipalCache
    gateway: Gateway


@dataclass(frozen=True, slots=True)
class EndpointCall:
    """An authenticated call to one endpoint."""

    principal: Principal
    endpoint: Endpoint
    gateway: Gateway


def gateway_host(request: Request) -> GatewayHost:
    """The app state, by the same convention as ``aicloud.server.deps.get_state``."""
    host: GatewayHost = request.app.state.aicloud
    return host


async def require_endpoint_caller(
    request: Request, name: str, host: Annotated[GatewayHost, Depends(gateway_host)]
) -> EndpointCall:
    """The auth decision of endpoint routes: a workspace token, or a token for this endpoint."""
    header = request.headers.get("authorization")
    principal = host.principals.get(header) if header else None
    if principal is None:
        principal = await run_in_threadpool(authenticate, host.store, header)
        host.principals.put(header or "", principal)
    principal.require(Role.VIEWER)
    request.state.principal = principal
    scope = principal.token.scope
    if scope is not None and scope.startswith("endpoint:") and scope[9:] != name:
        raise NotFoundError.of("deployment", name)
    if scope is not None and scope.startswith("deployment:"):
        raise PermissionDeniedError("a replica token can only download its deployment's artifacts")
    endpoint = host.gateway.registry.get(principal.workspace.id, name)
    if endpoint is None:
        raise NotFoundError.of("deployment", name)
    return EndpointCall(principal, endpoint, host.gateway)


require_endpoint_caller.__aicloud_auth__ = "endpoint"  # type: ignore[attr-defined]


class _Body:
    """The request body as httpx content: whole bytes, or a stream that remembers being read."""

    def __init__(self, request: Request, buffered: bytes | None) -> None:
        self.buffered = buffered
        self._request = request
        self.started = False

    @property
    def resendable(self) -> bool:
        return self.buffered is not None or not self.started

    def content(self) -> bytes | AsyncIterator[bytes]:
        return self.buffered if self.buffered is not None else self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        self.started = True
        async for chunk in self._request.stream():
            if chunk:
                yield chunk


class _Relay(Response):
    """Streams a replica's response to the caller, then closes it and releases the replica slot.

    Stops reading the replica as soon as the caller disconnects.
    """

    def __init__(
        self, upstream: httpx.Response, headers: list[tuple[bytes, bytes]], release: Callable[[], None]
    ):
        self.status_code = upstream.status_code
        self.raw_headers = headers
        self.background = None
        self._upstream = upstream
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                async for chunk in self._upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
            self._release()


class Gateway:
    """Forwards endpoint calls to replicas over one pooled client; owns that client.

    ``registry`` is the live routing table the deployment controller writes. Call
    :meth:`aclose` when the app shuts down.
    """

    def __init__(
        self,
        registry: EndpointRegistry,
        *,
        hold_timeout_s: float = HOLD_TIMEOUT_S,
        max_connections: int = 512,
        max_keepalive: int = 128,
    ) -> None:
        self.registry = registry
        self.hold_timeout_s = hold_timeout_s
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=4.0,  # under uvicorn's 5 s keep-alive, so the replica never closes first
        )
        self._client: httpx.AsyncClient | None = None
        self._suspect: dict[str, float] = {}  # replica id → monotonic time until which to avoid it

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=self._limits,
                timeout=httpx.Timeout(READ_TIMEOUT_S, connect=5.0, pool=None),
                trust_env=False,
                follow_redirects=False,
            )
            # No default headers (user-agent, accept-encoding...): the replica sees the caller's.
            self._client.headers.clear()
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- choosing a replica ---------------------------------------------------------------

    def _choose(self, ep: Endpoint, exclude: set[str]) -> ReplicaSlot | None:
        if self._suspect:
            now = time.monotonic()
            for rid, until in list(self._suspect.items()):
                if until <= now:
                    self._suspect.pop(rid, None)
            slot = ep.choose(exclude | self._suspect.keys())
            if slot is not None:
                return slot
        return ep.choose(exclude or None)

    async def _hold(self, ep: Endpoint, request: Request, body: _Body) -> ReplicaSlot:
        """Wait for a ready replica of a cold deployment; 503 only after the hold timeout."""
        timeout = ep.timeout_s or self.hold_timeout_s
        deadline = time.monotonic() + timeout
        ep.waiting += 1
        try:
            self.registry.demand(ep)
            while True:
                slot = self._choose(ep, set())
                if slot is not None:
                    return slot
                if time.monotonic() >= deadline:
                    raise UnavailableError(
                        f"deployment {ep.name!r} could not start a replica within {timeout:g}s; "
                        "see the deployment's status and replica logs",
                        details={"deployment": ep.name, "waited_s": timeout},
                    )
                # Only once the body is read may receive() be polled for a disconnect.
                if body.buffered is not None and await request.is_disconnected():
                    raise UnavailableError("the caller went away", details={"deployment": ep.name})
                await asyncio.sleep(HOLD_POLL_S)
        finally:
            ep.waiting -= 1

    # -- forwarding ----------------------------------------------------------------------

    async def forward(self, call: EndpointCall, request: Request) -> Response:
        ep = call.endpoint
        ep.last_request = time.monotonic()
        scope = request.scope
        length = -1
        headers: list[tuple[bytes, bytes]] = []
        chunked = False
        for key, value in scope["headers"]:
            if key in _REQUEST_HEADERS:
                headers.append((key, value))
                if key == b"content-length":
                    length = int(value) if value.isdigit() else -1
            elif key == b"transfer-encoding":
                chunked = True
        if length > MAX_BODY_BYTES:  # refuse up front: a replica would cut the upload short
            raise PayloadTooLargeError(
                f"the request body is {length} bytes; the limit is {MAX_BODY_BYTES}",
                details={"limit": MAX_BODY_BYTES},
            )
        headers.append((b"authorization", b"Bearer " + ep.replica_key.encode()))
        if 0 <= length <= BUFFER_LIMIT and not chunked:
            body = _Body(request, await request.body() if length else b"")
        elif length < 0 and not chunked:
            body = _Body(request, b"")  # no body at all
        else:
            body = _Body(request, None)
        target = _target(scope)

        tried: set[str] = set()
        slot = self._choose(ep, tried) or await self._hold(ep, request, body)
        while True:
            slot.inflight += 1
            try:
                upstream = await self.client.send(
                    self.client.build_request(
                        request.method, slot.url + target, headers=headers, content=body.content()
                    ),
                    stream=True,
                )
            except _RETRYABLE as exc:
                slot.inflight -= 1
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    self._suspect[slot.replica_id] = time.monotonic() + SUSPECT_S
                tried.add(slot.replica_id)
                retry = self._choose(ep, tried) if body.resendable and len(tried) == 1 else None
                if retry is None:
                    raise _unreachable(ep, slot, exc) from exc
                slot = retry
                continue
            except httpx.TimeoutException as exc:
                slot.inflight -= 1
                raise UnavailableError(
                    f"replica of deployment {ep.name!r} did not answer in time",
                    details={"deployment": ep.name, "replica": slot.replica_id},
                ) from exc
            except BaseException:
                slot.inflight -= 1
                raise
            break
        return await self._respond(upstream, slot)

    async def _respond(self, upstream: httpx.Response, slot: ReplicaSlot) -> Response:
        headers = [(k, v) for k, v in upstream.headers.raw if k.lower() in _RESPONSE_HEADERS]
        length = upstream.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT:
            try:
                content = await upstream.aread()
            except httpx.HTTPError as exc:
                raise UnavailableError(
                    "the replica broke off its answer", details={"replica": slot.replica_id}
                ) from exc
            finally:
                await upstream.aclose()
                slot.inflight -= 1
            response = Response(status_code=upstream.status_code)
            response.body = content
            response.raw_headers = headers
            return response
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                slot.inflight -= 1

        return _Relay(upstream, headers, release)


def _target(scope: Scope) -> str:
    """The replica-side path and query, kept exactly as the caller encoded them."""
    raw: bytes | None = scope.get("raw_path")
    if raw:
        parts = raw.split(b"/", 4)  # b"", b"v1", b"endpoints", name, rest
        path = "/" + (parts[4].decode("latin-1") if len(parts) > 4 else "")
    else:
        path = "/" + scope["path"].split("/", 4)[4] if scope["path"].count("/") >= 4 else "/"
    query: bytes = scope.get("query_string", b"")
    return path + "?" + query.decode("latin-1") if query else path


def _unreachable(ep: Endpoint, slot: ReplicaSlot, exc: Exception) -> UnavailableError:
    return UnavailableError(
        f"no replica of deployment {ep.name!r} could be reached ({type(exc).__name__}); "
        "the controller replaces replicas that died, try again shortly",
        details={"deployment": ep.name, "replica": slot.replica_id},
    )


EndpointCaller = Annotated[EndpointCall, Depends(require_endpoint_caller)]


def make_gateway_router() -> APIRouter:
    """``/v1/endpoints/{name}/{path}`` (GET, POST, HEAD), authenticated by :func:`require_endpoint_caller`.

    The app state (``request.app.state.aicloud``) must carry ``store``, ``principals`` and
    ``gateway`` (a :class:`Gateway`); see :class:`GatewayHost`.
    """
    router = APIRouter(tags=["endpoints"])

    async def call_endpoint(name: str, path: str, request: Request, call: EndpointCaller) -> Response:
        return await call.gateway.forward(call, request)

    # One route per method: operation ids are route names and must stay unique.
    for method in ("GET", "POST", "HEAD"):
        router.add_api_route(
            "/v1/endpoints/{name}/{path:path}",
            call_endpoint,
            methods=[method],
            name=f"endpoints_{method.lower()}",
            summary=f"{method} on a deployment: forwarded to one of its replicas",
        )
    return router


__all__ = [
    "BUFFER_LIMIT",
    "HOLD_TIMEOUT_S",
    "EndpointCall",
    "Gateway",
    "GatewayHost",
    "gateway_host",
    "make_gateway_router",
    "require_endpoint_caller",
]
