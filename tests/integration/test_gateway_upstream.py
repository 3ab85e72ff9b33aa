"""The gateway's HTTP/1.1 client (aicloud.gateway.upstream) on real sockets, alone and behind the
gateway (parsing a head alone: tests/unit/test_gateway_head.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from gateway_helpers import error_of, make_world, slot

from aicloud.gateway.upstream import Broken, ConnectFailed, HostPool, Upstreams
from aicloud.wire.tcp import KEEPALIVE_IDLE_S, free_port

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def _exchange(script: Script, requests: int = 1) -> tuple[list[list[bytes]], int]:
    """Run ``requests`` GETs through one Upstreams against a server answering with ``script``;
    returns the bodies and the number of idle connections left in the pool."""

    async def main() -> tuple[list[list[bytes]], int]:
        async with _serving(script) as pool:
            bodies = []
            for _ in range(requests):
                conn = await pool.acquire()
                await conn.request(b"GET / HTTP/1.1\r\n" + pool.host_header + b"\r\n", b"", None)
                head = await conn.read_head("GET")
                bodies.append([chunk async for chunk in conn.iter_body(head)])
            return bodies, pool.prune(time.monotonic())

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def _serving(script: Script) -> AsyncIterator[HostPool]:
    """A server answering each connection with ``script``, and a pool of one Upstreams to it."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await script(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstreams = Upstreams()
    try:
        yield upstreams.pool(f"http://127.0.0.1:{port}")
    finally:
        upstreams.close()
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports close


def test_chunked_answer_with_extensions_and_trailers_and_reuse() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: yes\r\n\r\n"
            )

    bodies, idle = _exchange(script, requests=2)
    assert bodies == [[b"abc", b"de"], [b"abc", b"de"]]
    assert idle == 1  # the same connection served both and went back to the pool


def test_answer_without_length_is_read_until_close_and_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello")
        await writer.drain()
        writer.close()

    bodies, idle = _exchange(script)
    assert b"".join(bodies[0]) == b"hello" and idle == 0


def test_connection_close_answer_is_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()

    bodies, idle = _exchange(script)
    assert bodies == [[b"ok"]] and idle == 0


def test_not_http_is_broken_and_refused_is_connect_failed() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"220 smtp.example ready\r\n\r\n")
        await writer.drain()

    with pytest.raises(Broken):
        _exchange(script)

    async def refused() -> None:
        await Upstreams().pool(f"http://127.0.0.1:{free_port()}").acquire()

    with pytest.raises(ConnectFailed):
        asyncio.run(refused())


# -- behind the gateway ---------------------------------------------------------------------------


def _one_answer_per_connection() -> tuple[str, socket.socket, list[int]]:
    """A 'replica' that answers the first request on each connection (keep-alive) and closes the
    connection when a second one arrives: a kept-alive connection that went stale under the gateway."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    connections: list[int] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n"
            conn.sendall(head + b'{"ok": true}')
            conn.recv(65536)  # the next request: hang up without answering

    def serve() -> None:
        while True:
            try:
                conn, addr = sock.accept()
            except OSError:
                return
            connections.append(addr[1])
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", sock, connections


def test_stale_kept_alive_connection_is_retried_on_a_fresh_one_to_the_same_replica() -> None:
    url, sock, connections = _one_answer_per_connection()
    try:
        with make_world(channel=False) as world:  # the HTTP hop's own retry
            ep = world.endpoint("alpha", slot("only", url))  # no other replica to fall back to
            with httpx.Client(headers=world.auth(), timeout=30) as h:
                for _ in range(3):
                    r = h.post(world.url("alpha", "predict"), json={"inputs": [[1]]})
                    assert r.status_code == 200, r.text
            assert len(connections) == 3 and ep.inflight == 0
    finally:
        sock.close()


def test_replica_silent_past_the_read_timeout_is_503() -> None:
    with make_world(read_timeout_s=0.5) as world:
        ep = world.endpoint("slow", slot("r1", world.a_url))
        r = httpx.get(world.url("slow", "predict?sleep=5"), headers=world.auth(), timeout=30)
        assert r.status_code == 503
        err = error_of(r)
        assert err["code"] == "unavailable" and "did not answer in time" in err["message"]
        assert ep.inflight == 0


def test_pooled_connections_probe_a_silent_replica() -> None:
    """The HTTP hop's connections have TCP keep-alive too (a vanished node sends no FIN)."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass

    async def main() -> tuple[int, int]:
        async with _serving(silent) as pool:
            conn = await pool.acquire()
            sock = conn.writer.transport.get_extra_info("socket")
            linux = hasattr(socket, "TCP_KEEPIDLE")
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) if linux else 0
            on = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            conn.close()
            return on, idle

    on, idle = asyncio.run(main())
    assert on == 1
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert idle == KEEPALIVE_IDLE_S
