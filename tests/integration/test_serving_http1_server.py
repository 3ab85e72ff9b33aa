"""aicloud.wire.http1 under a real uvicorn server: each response leaves in one write, a streamed
head and an interim 100 Continue are not held back."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from aicloud.wire.http1 import HeadHolder, OneWriteProtocol


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/whole: one small JSON answer; /stream: the head, then a chunk 0.8 s later."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":  # the request's body back
        body = (await receive())["body"]
        length = str(len(body)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.8)
        await send({"type": "http.response.body", "body": b"late", "more_body": False})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


@pytest.fixture
def server() -> Iterator[tuple[int, uvicorn.Server]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=OneWriteProtocol, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port, srv
    srv.should_exit = True
    thread.join(10)


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_a_real_server_writes_through_the_holder_and_streams_its_head_at_once(
    server: tuple[int, uvicorn.Server],
) -> None:
    port, srv = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(3):  # keep-alive: every response cycle of the connection, not only the first
            sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
            data = _read_until(sock, b'{"ok":true}')
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert data.count(b"HTTP/1.1") == 1
            (protocol,) = srv.server_state.connections
            assert isinstance(protocol.cycle.transport, HeadHolder)  # type: ignore[attr-defined]
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        head = _read_until(sock, b"\r\n\r\n")
        assert time.monotonic() - t0 < 0.6, "the head of a streamed response waited for its first chunk"
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        rest = _read_until(sock, b"0\r\n\r\n")
        assert b"late" in head + rest


def test_an_interim_100_continue_is_not_held_back(server: tuple[int, uvicorn.Server]) -> None:
    """curl sends ``Expect: 100-continue`` with larger bodies and waits for the 100 before sending."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = _read_until(sock, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"hello")
        answer = _read_until(sock, b"hello")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
