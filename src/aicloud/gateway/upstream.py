"""A small HTTP/1.1 client for the gateway → replica hop: keep-alive connections over asyncio streams.

The replicas are local, trusted, HTTP/1.1 servers (uvicorn), so the client does only what the hop
needs and nothing per request that it can avoid: one :class:`HostPool` per replica address keeps idle
connections (newest first) for reuse; :meth:`Connection.request` writes the request head and body in
as few writes as possible; :meth:`Connection.read_head` parses the status line and headers; the body
comes back whole (:meth:`Connection.read_body`, for a known length) or as chunks
(:meth:`Connection.iter_body`: ``Content-Length``, ``Transfer-Encoding: chunked`` or read-until-close).

Failures are typed for the gateway's retry rule:

* :class:`ConnectFailed`: no connection (refused, timed out). Nothing was sent.
* :class:`Broken`: the connection failed before a complete response head arrived (reset, closed
  without an answer, garbage). The replica answered nothing the caller could have seen.
* :class:`TimedOut`: the replica sent nothing for ``read_timeout`` seconds.

A connection goes back to its pool only after its response was read to the end with known framing and
without ``Connection: close``; any failure closes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from urllib.parse import urlsplit

from aicloud.wire.tcp import probe_liveness

#: Idle connections are dropped after this long (under uvicorn's default 5 s keep-alive, so the
#: replica never closes one the gateway is about to reuse).
KEEPALIVE_S = 4.0
#: How long opening a connection may take.
CONNECT_TIMEOUT_S = 5.0
#: Bytes per read of a streamed body.
CHUNK = 64 * 1024
#: Request bodies up to this size are sent in the same write as the head.
COALESCE = 64 * 1024


class UpstreamError(Exception):
    """The replica hop failed; see the subclasses."""


class ConnectFailed(UpstreamError):
    """No connection could be opened: nothing was sent."""


class Broken(UpstreamError):
    """The connection failed before a complete response head: the replica answered nothing."""


class TimedOut(UpstreamError):
    """The replica sent nothing for ``read_timeout`` seconds."""


class Head:
    """A response's status line and headers (names lowercased), and how its body is framed."""

    __slots__ = ("chunked", "headers", "keep_alive", "length", "status")

    def __init__(self, raw: bytes, method: str) -> None:
        lines = raw.split(b"\r\n")
        first = lines[0]
        if not first.startswith(b"HTTP/1.") or len(first) < 12 or not first[9:12].isdigit():
            raise Broken(f"not an HTTP/1.x response: {first[:80]!r}")
        self.status = int(first[9:12])
        self.keep_alive = first.startswith(b"HTTP/1.1")
        self.headers: list[tuple[bytes, bytes]] = []
        self.length = -1  # -1: unknown (read until close, unless chunked)
        self.chunked = False
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                raise Broken(f"malformed response header {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit():
                    raise Broken(f"bad Content-Length {value[:40]!r}")
                self.length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = value.lower().endswith(b"chunked")
            elif name == b"connection":
                lowered = value.lower()
                if b"close" in lowered:
                    self.keep_alive = False
                elif b"keep-alive" in lowered:
                    self.keep_alive = True
            self.headers.append((name, value))
        if method == "HEAD" or self.status in (204, 304):
            self.length, self.chunked = 0, False
        elif self.chunked:
            self.length = -1


class Connection:
    """One keep-alive connection to a replica. Not shared: one request at a time."""

    __slots__ = ("_deadline", "idle_since", "pool", "reader", "reused", "timed_out", "writer")

    def __init__(self, pool: HostPool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.pool = pool
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False
        self.timed_out = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def usable(self, now: float) -> bool:
        """Idle, open, and not closed by the replica meanwhile (EOF seen by the loop)."""
        return (
            now - self.idle_since < self.pool.keepalive_s
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        self._disarm()
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()  # no FIN handshake to wait for: the replica drops it at once

    def release(self, head: Head) -> None:
        """The response was read to the end: keep the connection for the next request, or close it."""
        self._disarm()
        if head.keep_alive and (head.length >= 0 or head.chunked):
            self.pool.put(self)
        else:
            self.close()

    # -- the read watchdog ----------------------------------------------------------------------

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.pool.read_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self.timed_out = True
        self._deadline = None
        self.writer.transport.abort()

    def _failed(self, exc: BaseException, what: str) -> UpstreamError:
        self.close()
        if self.timed_out:
            return TimedOut(f"no answer within {self.pool.read_timeout_s:g}s")
        return Broken(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))

    # -- one exchange ---------------------------------------------------------------------------

    async def request(self, head: bytes, body: bytes | None, stream: AsyncIterator[bytes] | None) -> None:
        """Send the request: ``head`` (ending in a blank line), then ``body`` or the chunks of ``stream``.

        ``stream`` chunks are written as they are: the caller frames them to match ``head``
        (``Content-Length``, or ``Transfer-Encoding: chunked`` with chunk-encoded pieces).
        """
        writer = self.writer
        try:
            if body is not None and len(body) <= COALESCE:
                writer.write(head + body)
            else:
                self._arm()  # a replica that stops reading a large upload times out too
                writer.write(head)
                if body:
                    writer.write(body)
                    await writer.drain()
                elif stream is not None:
                    async for chunk in stream:
                        writer.write(chunk)
                        await writer.drain()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a write on a closed transport (uvloop)
            raise self._failed(exc, "sending the request failed") from exc
        except BaseException:  # the caller went away mid-upload, or cancellation: never reuse
            self.close()
            raise

    async def read_head(self, method: str) -> Head:
        """The response head; 1xx interim answers are skipped."""
        self._arm()
        try:
            while True:
                raw = await self.reader.readuntil(b"\r\n\r\n")
                head = Head(raw[:-4], method)
                if not 100 <= head.status < 200:
                    return head
        except Broken:
            self.close()
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise self._failed(exc, "the replica closed the connection without an answer") from exc
        except BaseException:
            self.close()
            raise

    async def read_body(self, head: Head) -> bytes:
        """The whole body of a response with a known length (``head.length >= 0``)."""
        if head.length == 0:
            self.release(head)
            return b""
        try:
            body = await self.reader.readexactly(head.length)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise self._failed(exc, "the replica broke off its answer") from exc
        except BaseException:
            self.close()
            raise
        self.release(head)
        return body

    async def iter_body(self, head: Head) -> AsyncGenerator[bytes, None]:
        """The body as it arrives; releases (or closes) the connection when done."""
        reader = self.reader
        try:
            if head.chunked:
                while True:
                    self._arm()
                    line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                            pass
                        break
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif head.length >= 0:
                left = head.length
                while left:
                    self._arm()
                    data = await reader.read(min(left, CHUNK))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(data)
                    yield data
            else:
                while True:
                    self._arm()
                    data = await reader.read(CHUNK)
                    if not data:
                        break
                    yield data
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise self._failed(exc, "the replica broke off its answer") from exc
        except BaseException:
            self.close()  # the caller stopped reading (disconnect, cancellation): never reuse
            raise
        self.release(head)


class HostPool:
    """Idle keep-alive connections to one replica address (``http://host:port``)."""

    def __init__(self, url: str, *, keepalive_s: float, read_timeout_s: float, max_idle: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = f"host: {parts.netloc}\r\n".encode("latin-1")
        self.keepalive_s = keepalive_s
        self.read_timeout_s = read_timeout_s
        self.max_idle = max_idle
        self.closed = False  # dropped by its Upstreams: connections coming back are closed
        self.last_used = time.monotonic()
        self._idle: list[Connection] = []

    async def acquire(self, fresh: bool = False) -> Connection:
        """An idle connection still usable, else a new one (``fresh``: always a new one)."""
        now = self.last_used = time.monotonic()
        if not fresh:
            idle = self._idle
            while idle:
                conn = idle.pop()
                if conn.usable(now):
                    conn.reused = True
                    return conn
                conn.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=CHUNK), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {type(exc).__name__}") from exc
        probe_liveness(writer.transport)
        return Connection(self, reader, writer)

    def put(self, conn: Connection) -> None:
        if self.closed or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def prune(self, now: float) -> int:
        """Close idle connections past their keep-alive; the number left."""
        keep = []
        for conn in self._idle:
            if conn.usable(now):
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep
        return len(keep)

    def close(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Upstreams:
    """One :class:`HostPool` per replica URL; pools idle past their keep-alive are dropped."""

    def __init__(
        self,
        *,
        keepalive_s: float = KEEPALIVE_S,
        read_timeout_s: float = 300.0,
        max_idle: int = 128,
    ) -> None:
        self.keepalive_s = keepalive_s
        self.read_timeout_s = read_timeout_s
        self.max_idle = max_idle
        self._pools: dict[str, HostPool] = {}
        self._swept = time.monotonic()

    def pool(self, url: str) -> HostPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = HostPool(
                url, keepalive_s=self.keepalive_s, read_timeout_s=self.read_timeout_s, max_idle=self.max_idle
            )
        now = time.monotonic()
        if now - self._swept > self.keepalive_s:
            self._sweep(now)
        return pool

    def _sweep(self, now: float) -> None:
        self._swept = now
        for url, pool in list(self._pools.items()):
            if not pool.prune(now) and now - pool.last_used > self.keepalive_s:
                del self._pools[url]
                pool.close()  # a connection in use now is closed when it comes back

    def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
