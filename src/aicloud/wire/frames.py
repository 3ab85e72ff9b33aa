"""The channel's wire format: many requests at once over one connection from the gateway to a replica.

Plain HTTP/1.1 costs the gateway → replica hop one write, one read and one parse per request on
both ends, and a batch of 16 answers leaves the replica as 16 writes. The channel multiplexes
requests as frames on one long-lived connection per replica, so whatever both ends have ready in
one event-loop pass goes out in one write (:mod:`aicloud.serving.channel` is the replica's end,
:mod:`aicloud.gateway.channel` the gateway's).

A connection becomes a channel with an HTTP/1.1 upgrade on the replica's ordinary port: the gateway
sends :func:`hello` (``OPTIONS /.aicloud-channel`` with ``Upgrade: aicloud-channel/1`` and the
replica key as bearer) and the replica answers :data:`ACK` (``101 Switching Protocols``). The
replica recognises the hello by its first line (:data:`MAGIC`); anything else on that port is HTTP
as before, and a server that does not know the channel answers the hello with an ordinary HTTP
response, which tells the gateway to use HTTP there. After that, both ways, frames::

    u32 payload length | u32 stream id | u8 kind | payload

======== ============== ==================================================================
kind     direction      payload
======== ============== ==================================================================
REQUEST  to replica     u32 head length, head (``METHOD target\\r\\n`` + header lines), body
CANCEL   to replica     none: the caller went away, drop the stream's work
FULL     to gateway     u32 head length, head (``status\\r\\n`` + header lines), whole body
START    to gateway     head only; BODY frames follow, then END (answers over PIECE bytes too)
BODY     to gateway     a piece of the body, more follows
END      to gateway     the last piece of the body (may be empty)
======== ============== ==================================================================

Header lines are ``name: value\\r\\n`` with lowercase names, as HTTP/1.1 would carry them.
"""

from __future__ import annotations

import asyncio
import struct

MAGIC = b"OPTIONS /.aicloud-channel HTTP/1.1\r\n"
ACK = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: aicloud-channel/1\r\n\r\n"
#: The longest hello a replica reads before it gives up on the connection.
MAX_HELLO = 4096
#: An answer body larger than this leaves the replica as START, BODY pieces of this size, END.
PIECE = 1 << 20
#: Largest frame either end accepts: a REQUEST carries at most the gateway's 1 MiB buffer limit,
#: a FULL or BODY frame at most :data:`PIECE`, plus the head.
MAX_FRAME = 8 << 20

REQUEST, CANCEL, FULL, START, BODY, END = 1, 2, 3, 4, 5, 6

_HEADER = struct.Struct("!IIB")
_LEN = struct.Struct("!I")
HEADER_SIZE = _HEADER.size


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def hello(host: str, key: str) -> bytes:
    """The upgrade request that opens a channel."""
    return MAGIC + (
        f"host: {host}\r\nconnection: upgrade\r\nupgrade: aicloud-channel/1\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: 0\r\n\r\n"
    ).encode("latin-1")


def hello_key(request: bytes) -> bytes | None:
    """The bearer of a hello (everything up to its blank line), or None if it carries none."""
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token if scheme.lower() == b"bearer" else None
    return None


def frame(kind: int, sid: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(len(payload), sid, kind) + payload


def frame_with_head(kind: int, sid: int, head: bytes, body: bytes) -> bytes:
    """A REQUEST or FULL frame: head and body with the head's length in front."""
    return _HEADER.pack(4 + len(head) + len(body), sid, kind) + _LEN.pack(len(head)) + head + body


def split_head(payload: bytes) -> tuple[bytes, bytes]:
    """A REQUEST or FULL payload's head and body."""
    if len(payload) < 4:
        raise FrameError("frame too short for its head length")
    (n,) = _LEN.unpack_from(payload)
    if 4 + n > len(payload):
        raise FrameError("head length past the end of the frame")
    return payload[4 : 4 + n], payload[4 + n :]


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A head's first line and its headers as ``(name, value)`` pairs."""
    first, _, rest = head.partition(b"\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in rest.split(b"\r\n"):
        if line:
            name, sep, value = line.partition(b": ")
            if not sep:
                raise FrameError(f"malformed header line {line[:80]!r}")
            headers.append((name, value))
    return first, headers


def header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in headers)


class Coalescer:
    """Writes the frames queued during one event-loop pass in one write (both ends of a channel).

    ``transport`` is set once the connection is made; frames queued on a closed one are dropped.
    """

    __slots__ = ("_out", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self._out: list[bytes] = []

    def emit(self, data: bytes) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))


class Decoder:
    """Cuts a byte stream into ``(kind, stream id, payload)`` frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= HEADER_SIZE:
            size, sid, kind = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME or not REQUEST <= kind <= END:
                raise FrameError(f"bad frame (kind {kind}, {size} bytes)")
            start = pos + HEADER_SIZE
            if end - start < size:
                break
            out.append((kind, sid, bytes(buf[start : start + size])))
            pos = start + size
        if pos:
            del buf[:pos]
        return out


__all__ = [
    "ACK",
    "BODY",
    "CANCEL",
    "END",
    "FULL",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_FRAME",
    "MAX_HELLO",
    "PIECE",
    "REQUEST",
    "START",
    "Coalescer",
    "Decoder",
    "FrameError",
    "frame",
    "frame_with_head",
    "header_lines",
    "hello",
    "hello_key",
    "parse_head",
    "split_head",
]
