"""The caller's side of an endpoint call, as the gateway reads it: the headers it passes on
(:func:`read_headers` → :class:`Incoming`), the body (whole, or a stream that remembers being read),
and the watch that withdraws a request whose caller hung up (:class:`CallerWatch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "WATCH_AFTER_S",
    "Body",
    "CallerWatch",
    "ClientGone",
    "Incoming",
    "read_body",
    "read_headers",
    "wait_disconnect",
]

#: A call whose answer takes longer than this starts watching its caller: a caller that hangs up
#: meanwhile has its request withdrawn from the replica (whose batcher then drops it). Quicker
#: calls pay for a timer only.
WATCH_AFTER_S = 0.2

Scope = MutableMapping[str, Any]

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


class ClientGone(Exception):
    """The caller disconnected before its request could be forwarded: nobody to answer."""


@dataclass(slots=True)
class Incoming:
    """What the gateway needs of a request's headers, read in one pass (:func:`read_headers`)."""

    authorization: str | None
    forward: bytes  # the header lines passed on to the replica, CRLF-terminated
    length: int  # Content-Length, -1 when absent or invalid
    chunked: bool  # Transfer-Encoding: chunked


def read_headers(scope: Scope) -> Incoming:
    authorization: str | None = None
    parts: list[bytes] = []
    length = -1
    chunked = False
    for key, value in scope["headers"]:
        if key in _REQUEST_HEADERS:
            if key == b"content-length":
                length = int(value) if value.isdigit() else -1
                continue  # re-added below once the framing is known
            parts += (key, b": ", value, b"\r\n")
        elif key == b"authorization":
            authorization = value.decode("latin-1")
        elif key == b"transfer-encoding":
            chunked = True
    return Incoming(authorization, b"".join(parts), length, chunked)


class Body:
    """The request body: whole bytes, or a stream from the ASGI ``receive`` that remembers being read."""

    __slots__ = ("buffered", "chunked", "receive", "started")

    def __init__(self, receive: Any, buffered: bytes | None, chunked: bool) -> None:
        self.receive = receive
        self.buffered = buffered
        self.chunked = chunked  # re-frame the stream as chunked for the replica
        self.started = False

    @property
    def resendable(self) -> bool:
        return self.buffered is not None or not self.started

    def stream(self) -> AsyncIterator[bytes] | None:
        return None if self.buffered is not None else self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                yield b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.chunked else chunk
            if not message.get("more_body", False):
                break
        if self.chunked:
            yield b"0\r\n\r\n"


async def read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class CallerWatch:
    """Cancels the forwarding task if the caller disconnects while the answer is awaited; armed
    only after :data:`WATCH_AFTER_S`. Only for buffered bodies: a streamed one reads ``receive``."""

    __slots__ = ("gone", "receive", "task", "timer", "watcher")

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.gone = False
        self.task = asyncio.current_task()
        self.watcher: asyncio.Future[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._arm)

    def _arm(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await wait_disconnect(self.receive)
        self.gone = True
        if self.task is not None:
            self.task.cancel()

    def stop(self) -> None:
        self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
