"""The gateway's end of the replica channel (wire format: :mod:`aicloud.wire.frames`).

:class:`Channels` keeps one :class:`Channel` per replica (address and key): a long-lived connection
that carries every buffered request the gateway sends that replica, each as a frame with its own
stream id. Requests queued in one event-loop pass leave in one write, and the answers of a whole
batch come back in one read, where HTTP/1.1 would need a connection, a write and a read per request.

A connection turns into a channel with an HTTP upgrade (:func:`aicloud.wire.frames.hello`) that
the replica answers ``101``. A peer that answers anything else is not an aicloud replica that speaks
the channel: its address is remembered for :data:`HTTP_ONLY_S` and :meth:`Channels.request`
returns ``None`` for it meanwhile, so the gateway uses HTTP there.

Failures have the same types as the HTTP hop (:mod:`aicloud.gateway.upstream`), so the gateway's
retry rule applies unchanged: :class:`ConnectFailed` (no channel could be opened; nothing sent),
:class:`Broken` (the channel closed before the request's answer began) and :class:`TimedOut`.
The channel's socket has TCP keep-alive (:func:`aicloud.wire.tcp.probe_liveness`): when a
replica's node vanishes without closing it, its streams fail as :class:`Broken` within about 25 s,
and are retried elsewhere, instead of each waiting out the read timeout.
A request whose caller went away (its task cancelled, or its streamed answer closed early) sends
CANCEL, so the replica drops its queued work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from urllib.parse import urlsplit

from aicloud.gateway.upstream import (
    CONNECT_TIMEOUT_S,
    Broken,
    ConnectFailed,
    TimedOut,
    UpstreamError,
)
from aicloud.wire import frames
from aicloud.wire.tcp import probe_liveness

#: How long an address that refused the channel is sent HTTP before it is asked again.
HTTP_ONLY_S = 60.0


class NoChannel(Exception):
    """The peer does not speak the channel (it answered the hello with something else)."""


class Reply:
    """A replica's answer: status, headers, and the whole body or a stream of pieces."""

    __slots__ = ("_channel", "_pieces", "body", "headers", "sid", "status")

    def __init__(self, head: bytes, body: bytes | None, channel: Channel, sid: int) -> None:
        first, self.headers = frames.parse_head(head)
        if not first.isdigit():
            raise frames.FrameError(f"bad status {first[:20]!r}")
        self.status = int(first)
        self.body = body
        self.sid = sid
        self._channel = channel
        self._pieces: asyncio.Queue[bytes | UpstreamError | None] | None = (
            None if body is not None else asyncio.Queue()
        )

    def put(self, piece: bytes | UpstreamError | None) -> None:
        if self._pieces is not None:
            self._pieces.put_nowait(piece)

    async def iter_body(self) -> AsyncGenerator[bytes, None]:
        """The pieces of a streamed answer (``body`` is None); :class:`Broken` or :class:`TimedOut`
        if it is cut off."""
        assert self._pieces is not None, "a whole answer is in body"
        finished = False
        try:
            while True:
                try:
                    piece = await asyncio.wait_for(self._pieces.get(), self._channel.read_timeout_s)
                except TimeoutError:
                    raise TimedOut(f"no answer for {self._channel.read_timeout_s:g}s") from None
                if isinstance(piece, UpstreamError):
                    raise piece
                if piece is None:
                    finished = True
                    return
                if piece:
                    yield piece
        finally:
            if not finished:
                self._channel.cancel(self.sid)


class Channel(asyncio.Protocol):
    """One channel to one replica; see the module docstring."""

    def __init__(self, owner: Channels, url: str, key: str, read_timeout_s: float) -> None:
        self.owner = owner
        self.url = url
        self.key = key
        self.read_timeout_s = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dead: UpstreamError | None = None
        self._early = b""
        self._decoder = frames.Decoder()
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._streaming: dict[int, Reply] = {}
        self._next = 0
        self._writer = frames.Coalescer()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self._writer.transport = self.transport
        probe_liveness(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = Broken(f"channel to {self.url} closed" + (f": {exc}" if exc else ""))
        self.owner.forget(self)
        if not self.acked.done():
            self.acked.set_exception(ConnectFailed(f"{self.url} closed the channel before accepting it"))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(self.dead)
        for reply in self._streaming.values():
            reply.put(self.dead)
        self._waiting.clear()
        self._streaming.clear()

    def data_received(self, data: bytes) -> None:
        if not self.acked.done():
            data = self._read_ack(data)
            if not data:
                return
        try:
            incoming = self._decoder.feed(data)
            for kind, sid, payload in incoming:
                self._on_frame(kind, sid, payload)
        except frames.FrameError:
            self.close()

    def _read_ack(self, data: bytes) -> bytes:
        early = self._early + data
        if len(early) < len(frames.ACK) and frames.ACK.startswith(early):
            self._early = early
            return b""
        self._early = b""
        if not early.startswith(frames.ACK):
            self.acked.set_exception(NoChannel(f"{self.url} answered the channel hello with {early[:40]!r}"))
            self.close()
            return b""
        self.acked.set_result(None)
        return early[len(frames.ACK) :]

    def _on_frame(self, kind: int, sid: int, payload: bytes) -> None:
        if kind == frames.FULL or kind == frames.START:
            future = self._waiting.get(sid)
            if future is None or future.done():
                return  # cancelled meanwhile
            try:
                if kind == frames.FULL:
                    reply = Reply(*frames.split_head(payload), self, sid)
                else:
                    reply = Reply(payload, None, self, sid)
            except frames.FrameError as exc:
                future.set_exception(Broken(f"{self.url} sent a malformed answer: {exc}"))
                raise
            del self._waiting[sid]
            if kind == frames.START:
                self._streaming[sid] = reply
            future.set_result(reply)
        elif kind == frames.BODY:
            streamed = self._streaming.get(sid)
            if streamed is not None:
                streamed.put(payload)
        elif kind == frames.END:
            streamed = self._streaming.pop(sid, None)
            if streamed is not None:
                streamed.put(payload)
                streamed.put(None)
        else:
            raise frames.FrameError(f"frame kind {kind} does not go to the gateway")

    # -- requests -------------------------------------------------------------------------------

    async def request(self, head: bytes, body: bytes) -> Reply:
        """Send one request; its answer once the replica began it."""
        if self.dead is not None:
            raise self.dead
        self._next = sid = (self._next + 1) & 0xFFFFFFFF
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._waiting[sid] = future
        self._writer.emit(frames.frame_with_head(frames.REQUEST, sid, head, body))
        timer = loop.call_later(self.read_timeout_s, self._expire, sid)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(sid)
            raise
        finally:
            timer.cancel()

    def _expire(self, sid: int) -> None:
        future = self._waiting.get(sid)
        if future is not None and not future.done():
            future.set_exception(TimedOut(f"no answer from {self.url} for {self.read_timeout_s:g}s"))
        self.cancel(sid)

    def cancel(self, sid: int) -> None:
        """The caller no longer wants stream ``sid``: tell the replica to drop its work."""
        known = self._waiting.pop(sid, None) is not None
        known = self._streaming.pop(sid, None) is not None or known
        if known and self.dead is None:
            self._writer.emit(frames.frame(frames.CANCEL, sid))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Channels:
    """The gateway's channels, one per replica address and key, opened on first use."""

    def __init__(self, *, read_timeout_s: float) -> None:
        self.read_timeout_s = read_timeout_s
        self._open: dict[tuple[str, str], Channel] = {}
        self._opening: dict[tuple[str, str], asyncio.Future[Channel | None]] = {}
        self._http_only: dict[str, float] = {}  # address → monotonic time until which to use HTTP

    async def request(self, url: str, key: str, head: bytes, body: bytes) -> Reply | None:
        """Send a buffered request to the replica at ``url``; ``None`` if it speaks only HTTP.

        A request lost on a channel that was already open goes once more on a new one, as the
        HTTP hop does with a kept-alive connection.
        """
        channel = self._open.get((url, key))
        if channel is not None and channel.dead is None:
            try:
                return await channel.request(head, body)
            except Broken:
                pass
        channel = await self._connect(url, key)
        return None if channel is None else await channel.request(head, body)

    async def _connect(self, url: str, key: str) -> Channel | None:
        until = self._http_only.get(url)
        if until is not None:
            if time.monotonic() < until:
                return None
            del self._http_only[url]  # a new replica may listen there now: ask again
        opening = self._opening.get((url, key))
        if opening is None:
            opening = asyncio.ensure_future(self._open_channel(url, key))
            self._opening[url, key] = opening
            opening.add_done_callback(lambda _: self._opening.pop((url, key), None))
        return await asyncio.shield(opening)

    async def _open_channel(self, url: str, key: str) -> Channel | None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        channel: Channel | None = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, channel = await loop.create_connection(
                    lambda: Channel(self, url, key, self.read_timeout_s), host, port
                )
                assert channel.transport is not None
                channel.transport.write(frames.hello(f"{host}:{port}", key))
                await channel.acked
        except NoChannel:
            self._http_only[url] = time.monotonic() + HTTP_ONLY_S
            return None
        except (OSError, TimeoutError, ConnectFailed) as exc:
            if channel is not None:
                channel.close()
            if isinstance(exc, ConnectFailed):
                raise
            raise ConnectFailed(f"{url}: {exc or type(exc).__name__}") from exc
        old = self._open.get((url, key))
        if old is not None and old is not channel:
            old.close()
        self._open[url, key] = channel
        return channel

    def forget(self, channel: Channel) -> None:
        if self._open.get((channel.url, channel.key)) is channel:
            del self._open[channel.url, channel.key]

    def close(self) -> None:
        for channel in list(self._open.values()):
            channel.close()
        self._open.clear()
        for opening in list(self._opening.values()):
            opening.cancel()


__all__ = ["Channel", "Channels", "NoChannel", "Reply"]
