"""The endpoint proxy: forwards one authenticated call to a replica of its deployment.

:class:`Gateway` is the data path behind ``/v1/endpoints/{name}/{path}`` (the raw ASGI app in
:mod:`aicloud.gateway.asgi` authenticates and then calls :meth:`Gateway.forward`):

1. :meth:`Gateway.forward` picks the least-outstanding ready replica. With none ready it holds
   the request (``Endpoint.waiting``, ``EndpointRegistry.demand``) until one is, up to the
   endpoint's ``timeout_s`` (else :data:`HOLD_TIMEOUT_S`); only then is it 503. The registry
   wakes a held request the moment a replica turns ready.
2. A request with a buffered body (known length up to :data:`BUFFER_LIMIT`: nearly every
   inference call) goes over the replica's channel (:mod:`aicloud.gateway.channel`: one
   multiplexed connection per replica, many requests per write). Other requests, and replicas
   that do not speak the channel, go out on a pooled keep-alive connection
   (:mod:`aicloud.gateway.upstream`: HTTP/1.1 over asyncio streams) with the replica key as
   bearer; larger or chunked bodies stream through. Responses with a known length up to the
   same limit are read in one go and answered in one ``send``; others stream back as they
   arrive, and stop as soon as the caller disconnects. A caller that disconnects while its
   answer is awaited (watched after :data:`~aicloud.gateway.request.WATCH_AFTER_S`) has its
   request withdrawn (:mod:`aicloud.gateway.request` reads the caller's side: headers, body, watch).
3. If the connection fails before any response (refused, reset, closed without an answer), the
   request is retried once on another ready replica, provided its body can be sent again: a
   buffered body always can, a streamed one only if none of it was sent yet. A replica that
   refused a connection is avoided for :data:`SUSPECT_S` seconds. A kept-alive connection the
   replica had closed meanwhile is not the replica's fault: the request goes again on a fresh
   connection to the same replica first (a request lost on an open channel, on a new channel).

Errors the gateway raises itself are :class:`~aicloud.errors.AicloudError`s (the ASGI app
answers them in aicloud's error shape, or the Open Inference Protocol's on ``v2`` paths);
whatever a replica answers (errors included) passes through unchanged. In-flight counts per
replica (``ReplicaSlot.inflight``) cover a request from the moment it is sent until its answer
was relayed; the autoscaler reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

from aicloud.errors import PayloadTooLargeError, UnavailableError
from aicloud.gateway.channel import Channels, Reply
from aicloud.gateway.registry import Endpoint, EndpointRegistry, ReplicaSlot
from aicloud.gateway.request import (
    Body,
    CallerWatch,
    ClientGone,
    Incoming,
    read_body,
    read_headers,
    wait_disconnect,
)
from aicloud.gateway.upstream import (
    Broken,
    ConnectFailed,
    Connection,
    Head,
    TimedOut,
    UpstreamError,
    Upstreams,
)

log = logging.getLogger("aicloud.gateway")

#: How long a request for a deployment with no ready replica waits for one (unless the
#: endpoint carries its deployment's ``timeout_s``).
HOLD_TIMEOUT_S = 120.0
#: Longest wait between two looks for a ready replica while a request is held (the registry
#: wakes held requests at once; this is the fallback).
HOLD_POLL_S = 0.05
#: Bodies (request or response) up to this size are read whole; larger ones stream.
BUFFER_LIMIT = 1 << 20
#: Largest request body the gateway forwards (the replicas' default limit too).
MAX_BODY_BYTES = 64 << 20
#: Idle time after which the gateway stops waiting for the next byte from a replica. Replicas
#: answer 504 themselves after the deployment's ``timeout_s``; this only guards against a hang.
READ_TIMEOUT_S = 300.0
#: How long a replica that refused a connection is skipped while another one is ready.
SUSPECT_S = 1.0

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
Scope = MutableMapping[str, Any]


class Gateway:
    """Forwards endpoint calls to replicas over pooled keep-alive connections; owns those connections.

    ``registry`` is the live routing table the deployment controller writes. Call
    :meth:`aclose` when the app shuts down.
    """

    def __init__(
        self,
        registry: EndpointRegistry,
        *,
        hold_timeout_s: float = HOLD_TIMEOUT_S,
        max_keepalive: int = 128,
        read_timeout_s: float = READ_TIMEOUT_S,
        channel: bool = True,
    ) -> None:
        self.registry = registry
        self.hold_timeout_s = hold_timeout_s
        self.upstreams = Upstreams(read_timeout_s=read_timeout_s, max_idle=max_keepalive)
        self.channels = Channels(read_timeout_s=read_timeout_s) if channel else None
        self._suspect: dict[str, float] = {}  # replica id → monotonic time until which to avoid it

    async def aclose(self) -> None:
        self.upstreams.close()
        if self.channels is not None:
            self.channels.close()

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

    async def _hold(self, ep: Endpoint, body: Body) -> ReplicaSlot:
        """Wait for a ready replica of a cold deployment; 503 only after the hold timeout."""
        if not ep.hold:  # placed on edge nodes: no cold start to wait for
            raise UnavailableError(
                f"deployment {ep.name!r} has no ready replica: its edge nodes are offline, unreachable "
                "or have not reported it ready; see `aicloud deploy show`",
                details={"deployment": ep.name},
            )
        timeout = ep.timeout_s or self.hold_timeout_s
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:  # called from the controller's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                loop.call_soon_threadsafe(ready.set)

        # Only once the body is read may receive() be watched for a disconnect.
        gone = asyncio.ensure_future(wait_disconnect(body.receive)) if body.buffered is not None else None
        ep.waiting += 1
        self.registry.add_waker(ep, wake)
        try:
            self.registry.demand(ep)
            while True:
                slot = self._choose(ep, set())
                if slot is not None:
                    return slot
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UnavailableError(
                        f"deployment {ep.name!r} could not start a replica within {timeout:g}s; "
                        "see the deployment's status and replica logs",
                        details={"deployment": ep.name, "waited_s": timeout},
                    )
                if gone is not None and gone.done():
                    raise ClientGone()
                waiter = asyncio.ensure_future(ready.wait())
                waits = {waiter} if gone is None else {waiter, gone}
                await asyncio.wait(waits, timeout=min(left, HOLD_POLL_S), return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                ready.clear()
        finally:
            self.registry.remove_waker(ep, wake)
            ep.waiting -= 1
            if gone is not None:
                gone.cancel()

    # -- forwarding ----------------------------------------------------------------------

    async def forward(self, ep: Endpoint, scope: Scope, receive: Any, send: Any, incoming: Incoming) -> None:
        """Forward one request and relay the answer; raises an AicloudError only before answering."""
        start = ep.last_request = time.monotonic()
        length = incoming.length
        if length > MAX_BODY_BYTES:  # refuse up front: a replica would cut the upload short
            raise PayloadTooLargeError(
                f"the request body is {length} bytes; the limit is {MAX_BODY_BYTES}",
                details={"limit": MAX_BODY_BYTES},
            )
        method: str = scope["method"]
        framing = b""  # how the replica learns the body's length
        if incoming.chunked:
            body = Body(receive, None, chunked=True)
            framing = b"transfer-encoding: chunked\r\n"
        elif length > BUFFER_LIMIT:
            body = Body(receive, None, chunked=False)
            framing = b"content-length: %d\r\n" % length
        else:
            data = await read_body(receive) if length > 0 else b""
            body = Body(receive, data, chunked=False)
            if length >= 0 or method not in ("GET", "HEAD"):
                framing = b"content-length: %d\r\n" % len(data)
        request_line = f"{method} {_target(scope)}".encode("latin-1")
        line = request_line + b" HTTP/1.1\r\n"
        # the HTTP hop's head is completed per replica (each has its own key: _exchange);
        # the channel's head: the same lines but the key, which travels in the channel's hello
        chead = b"".join([request_line, b"\r\n", incoming.forward, framing])

        tried: set[str] = set()
        slot = self._choose(ep, tried) or await self._hold(ep, body)
        watch = CallerWatch(receive) if body.buffered is not None else None
        try:
            while True:
                slot.inflight += 1
                try:
                    answer = await self._send(slot, method, line, incoming.forward, framing, chead, body)
                except (ConnectFailed, Broken) as exc:
                    slot.inflight -= 1
                    if isinstance(exc, ConnectFailed):
                        self._suspect[slot.replica_id] = time.monotonic() + SUSPECT_S
                    self.registry.suspect(ep)  # the controller polls the replica now, not in a second
                    tried.add(slot.replica_id)
                    retry = self._choose(ep, tried) if body.resendable and len(tried) == 1 else None
                    if retry is None:
                        ep.stats.record(slot.version, time.monotonic() - start, 0)
                        raise _unreachable(ep, slot, exc) from exc
                    slot = retry
                    continue
                except TimedOut as exc:
                    slot.inflight -= 1
                    ep.stats.record(slot.version, time.monotonic() - start, 0)
                    raise UnavailableError(
                        f"replica of deployment {ep.name!r} did not answer in time",
                        details={"deployment": ep.name, "replica": slot.replica_id},
                    ) from exc
                except BaseException:
                    slot.inflight -= 1
                    raise
                break
        except asyncio.CancelledError:
            if watch is not None and watch.gone:
                if watch.task is not None:
                    watch.task.uncancel()
                raise ClientGone() from None  # the request went with it (CANCEL, or a closed connection)
            raise
        finally:
            if watch is not None:
                watch.stop()
        status = answer.status if isinstance(answer, Reply) else answer[1].status
        ep.stats.record(slot.version, time.monotonic() - start, status)
        if isinstance(answer, Reply):
            await self._respond_reply(answer, slot, receive, send)
        else:
            await self._respond(*answer, slot, method, receive, send)

    async def _send(
        self,
        slot: ReplicaSlot,
        method: str,
        line: bytes,
        forward: bytes,
        framing: bytes,
        chead: bytes,
        body: Body,
    ) -> Reply | tuple[Connection, Head]:
        """A buffered body goes over the replica's channel when it has one; the rest over HTTP."""
        if self.channels is not None and slot.channel and body.buffered is not None:
            reply = await self.channels.request(slot.url, slot.key, chead, body.buffered)
            if reply is not None:
                return reply
        return await self._exchange(slot, method, line, forward, framing, body)

    async def _exchange(
        self, slot: ReplicaSlot, method: str, line: bytes, forward: bytes, framing: bytes, body: Body
    ) -> tuple[Connection, Head]:
        """Send the request on a pooled connection (a fresh one if a reused one was stale); the head.
        ``forward`` (the caller's headers that pass) and ``framing`` get the replica's key added."""
        pool = self.upstreams.pool(slot.url)
        conn = await pool.acquire()
        auth = b"authorization: Bearer %s\r\n" % slot.key.encode()
        wire = b"".join([line, pool.host_header, forward, auth, framing, b"\r\n"])
        try:
            await conn.request(wire, body.buffered, body.stream())
            return conn, await conn.read_head(method)
        except Broken:
            if not conn.reused or not body.resendable:
                raise
        conn = await pool.acquire(fresh=True)  # the replica had closed the idle connection
        await conn.request(wire, body.buffered, body.stream())
        return conn, await conn.read_head(method)

    async def _respond(
        self, conn: Connection, head: Head, slot: ReplicaSlot, method: str, receive: Any, send: Any
    ) -> None:
        headers = [(k, v) for k, v in head.headers if k in _RESPONSE_HEADERS]
        if 0 <= head.length <= BUFFER_LIMIT:
            try:
                content = await conn.read_body(head)
            except UpstreamError as exc:
                raise UnavailableError(
                    "the replica broke off its answer", details={"replica": slot.replica_id}
                ) from exc
            finally:
                slot.inflight -= 1
            await _send_whole(send, head.status, headers, content)
            return
        await self._stream(head.status, headers, conn.iter_body(head), slot, receive, send)

    async def _respond_reply(self, reply: Reply, slot: ReplicaSlot, receive: Any, send: Any) -> None:
        headers = [(k, v) for k, v in reply.headers if k in _RESPONSE_HEADERS]
        if reply.body is not None:
            slot.inflight -= 1
            await _send_whole(send, reply.status, headers, reply.body)
            return
        await self._stream(reply.status, headers, reply.iter_body(), slot, receive, send)

    async def _stream(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunks: AsyncGenerator[bytes, None],
        slot: ReplicaSlot,
        receive: Any,
        send: Any,
    ) -> None:
        """Relay a streamed answer until it ends or the caller disconnects."""
        relay = asyncio.ensure_future(self._relay(status, headers, chunks, send))
        gone = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not relay.done():  # the caller went away: stop reading the replica
                relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            slot.inflight -= 1

    @staticmethod
    async def _relay(
        status: int, headers: list[tuple[bytes, bytes]], chunks: AsyncGenerator[bytes, None], send: Any
    ) -> None:
        """Stream a replica's answer to the caller; a replica breaking off mid-answer cuts it short."""
        await send({"type": "http.response.start", "status": status, "headers": headers})
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            log.warning("replica answer cut short: %s", exc)
            return  # the ASGI server closes the connection: the caller sees a truncated answer
        finally:
            await chunks.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_whole(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """A replica's whole answer to the caller, in one start and one body message."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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


__all__ = [
    "BUFFER_LIMIT",
    "HOLD_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "ClientGone",
    "Gateway",
    "Incoming",
    "read_headers",
]
