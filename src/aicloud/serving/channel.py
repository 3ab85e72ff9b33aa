"""The replica's end of the gateway channel (wire format: :mod:`aicloud.wire.frames`).

:class:`SniffingProtocol` is uvicorn's httptools protocol with one addition: a connection whose first
bytes are the channel's hello becomes a :class:`ChannelServer` instead, on the same port. Every
other connection is HTTP/1.1 exactly as before, so a caller holding the replica key (tests, the
benchmark's direct rows) still talks plain HTTP.

:class:`ChannelServer` runs each REQUEST frame through the same ASGI app as an HTTP request, with a
scope built the way uvicorn builds one and the hello's key as the request's ``Authorization``: the
app checks it, counts it, drains and limits it as it does any request. Answers leave as FULL frames
(or START, BODY..., END for a streamed answer). Frames finished in the same event-loop pass are
written together: when a batch resolves, its answers go out in one write.

A CANCEL frame, or the connection closing, is the ASGI ``http.disconnect`` of the streams it
concerns: their queued work is dropped as for an HTTP client that went away. On shutdown (uvicorn's
drain) the channel takes no new requests and closes once its streams are answered; the gateway then
sends the requests it had not got answers for to another replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import unquote

from aicloud.errors import AicloudError
from aicloud.serving.asgi import SEE_LOGS
from aicloud.wire import frames
from aicloud.wire.http1 import OneWriteProtocol
from aicloud.wire.tcp import probe_liveness

log = logging.getLogger("aicloud.serving")

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT = {"type": "http.disconnect"}
_INTERNAL = json.dumps(AicloudError(f"internal server error; {SEE_LOGS}").to_payload()).encode()


class SniffingProtocol(OneWriteProtocol):
    """uvicorn's HTTP protocol (one write per response, :mod:`aicloud.wire.http1`), handing a
    connection that opens with the channel hello to a channel."""

    _sniffed = False
    _early = b""

    def data_received(self, data: bytes) -> None:
        if self._sniffed:
            super().data_received(data)
            return
        data = self._early + data
        if len(data) < len(frames.MAGIC) and frames.MAGIC.startswith(data):
            self._early = data  # too short to tell yet
            return
        self._sniffed, self._early = True, b""
        if not data.startswith(frames.MAGIC):
            super().data_received(data)
            return
        self.connections.discard(self)
        self._unset_keepalive_if_required()
        channel = ChannelServer(self.app, self.server_state, self.app_state, self.server, self.client)
        self.transport.set_protocol(channel)
        channel.connection_made(self.transport)
        channel.data_received(data)


class _Receive:
    """A stream's ASGI ``receive``: the body, then the disconnect. ``disconnected()`` is the future
    of that disconnect, which :func:`aicloud.serving.asgi.submit` watches without a task."""

    __slots__ = ("body", "gone")

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.gone: asyncio.Future[None] | None = None

    async def __call__(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnected()
        return _DISCONNECT

    def disconnected(self) -> asyncio.Future[None]:
        if self.gone is None:
            self.gone = asyncio.get_running_loop().create_future()
        return self.gone


class _Stream:
    """One request on the channel: its ASGI ``receive`` and ``send``."""

    __slots__ = ("channel", "done", "receive", "sid", "started", "streaming")

    def __init__(self, channel: ChannelServer, sid: int, body: bytes) -> None:
        self.channel = channel
        self.sid = sid
        self.receive = _Receive(body)
        self.started: bytes | None = None  # the answer's head, once the app sent it
        self.streaming = False
        self.done = False

    def disconnect(self) -> None:
        self.done = True  # nobody reads an answer any more
        gone = self.receive.disconnected()
        if not gone.done():
            gone.set_result(None)

    async def send(self, message: dict[str, Any]) -> None:
        if self.done:
            return
        kind = message["type"]
        if kind == "http.response.start":
            head = b"%d\r\n" % message["status"]
            self.started = head + frames.header_lines(message.get("headers") or [])
            return
        if kind != "http.response.body" or self.started is None:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        emit = self.channel.writer.emit
        if not self.streaming and not more and len(body) <= frames.PIECE:
            emit(frames.frame_with_head(frames.FULL, self.sid, self.started, body))
            self.done = True
            return
        if not self.streaming:
            self.streaming = True
            emit(frames.frame(frames.START, self.sid, self.started))
        pieces = [body[at : at + frames.PIECE] for at in range(0, len(body), frames.PIECE)] or [b""]
        for piece in pieces[:-1]:
            emit(frames.frame(frames.BODY, self.sid, piece))
        last = pieces[-1]
        if more:
            if last:
                emit(frames.frame(frames.BODY, self.sid, last))
        else:
            emit(frames.frame(frames.END, self.sid, last))
            self.done = True

    def finish(self) -> None:
        """The app returned: end an answer it left open, or answer 500 if it sent none."""
        if self.done:
            return
        if self.streaming:
            self.channel.writer.emit(frames.frame(frames.END, self.sid))
        else:
            head = b"500\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(_INTERNAL)
            self.channel.writer.emit(frames.frame_with_head(frames.FULL, self.sid, head, _INTERNAL))
        self.done = True


class ChannelServer(asyncio.Protocol):
    """One gateway channel on a replica: see the module docstring."""

    def __init__(
        self,
        app: Any,
        server_state: Any,
        app_state: dict[str, Any],
        server: tuple[str, int | None] | None,
        client: tuple[str, int] | None,
    ) -> None:
        self.app = app
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.server = server
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.decoder = frames.Decoder()
        self.streams: dict[int, _Stream] = {}
        self.auth: bytes | None = None  # "Bearer <key>" from the hello
        self._hello = b""
        self.writer = frames.Coalescer()  # everything queued in one loop pass leaves in one write
        self._closing = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        probe_liveness(transport)  # a gateway gone without a FIN ends the channel and its streams
        self.writer.transport = self.transport
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        for stream in list(self.streams.values()):
            stream.disconnect()

    def data_received(self, data: bytes) -> None:
        if self.auth is None:
            data = self._read_hello(data)
            if not data:
                return
        try:
            incoming = self.decoder.feed(data)
        except frames.FrameError as exc:
            log.warning("gateway channel from %s: %s; closing it", self.client, exc)
            self._abort()
            return
        for kind, sid, payload in incoming:
            if self.transport is None or self.transport.is_closing():
                return  # closed over a bad frame: the rest goes unread
            if kind == frames.REQUEST:
                self._start(sid, payload)
            elif kind == frames.CANCEL:
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.disconnect()

    def _read_hello(self, data: bytes) -> bytes:
        hello = self._hello + data
        request, sep, rest = hello.partition(b"\r\n\r\n")
        if not sep:
            if len(hello) > frames.MAX_HELLO:
                self._abort()
            else:
                self._hello = hello
            return b""
        self._hello = b""
        # a missing key is passed on as an empty one: every request on the channel then gets the
        # app's own 401
        self.auth = b"Bearer " + (frames.hello_key(request) or b"")
        assert self.transport is not None
        self.transport.write(frames.ACK)
        return rest

    # -- streams --------------------------------------------------------------------------------

    def _start(self, sid: int, payload: bytes) -> None:
        try:
            head, body = frames.split_head(payload)
            first, headers = frames.parse_head(head)
            method, _, target = first.decode("latin-1").partition(" ")
        except (frames.FrameError, UnicodeDecodeError) as exc:
            log.warning("gateway channel: bad request frame: %s", exc)
            self._abort()
            return
        if self._closing:
            # shutting down: left unanswered, it fails over to another replica when the channel
            # closes after the streams in flight (as a request on a closing HTTP connection would)
            return
        if sid in self.streams:
            log.warning("gateway channel: stream id %d reused while in flight; closing it", sid)
            self._abort()
            return
        raw_path, _, query = target.partition("?")
        assert self.auth is not None
        headers.append((b"authorization", self.auth))
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": method,
            "root_path": "",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "state": self.app_state.copy(),
        }
        stream = _Stream(self, sid, body)
        self.streams[sid] = stream
        task = asyncio.get_running_loop().create_task(self._run(stream, scope))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, stream: _Stream, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, stream.receive, stream.send)
        except Exception:
            log.exception("gateway channel: %s %s failed", scope["method"], scope["path"])
        finally:
            stream.finish()
            self.streams.pop(stream.sid, None)
            if self._closing and not self.streams:
                asyncio.get_running_loop().call_soon(self._close)  # after the pending flush

    # -- closing --------------------------------------------------------------------------------

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _close(self) -> None:
        self.writer.flush()
        self._abort()

    # -- uvicorn's connection interface -----------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn is stopping: close once the streams in flight are answered."""
        self._closing = True
        if not self.streams:
            self._close()

    def pause_writing(self) -> None:  # the gateway reads as fast as it can; nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass


__all__ = ["ChannelServer", "SniffingProtocol"]
