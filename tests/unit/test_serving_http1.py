"""aicloud.serving.http1: each response leaves in one write, a streamed head is not held back."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn

from aicloud.serving.http1 import JOIN_LIMIT, HeadHolder, OneWriteProtocol


class Recorder:
    """A transport that records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


def with_holder(check: Callable[[Recorder, HeadHolder], Awaitable[None]]) -> None:
    """Run ``check`` in an event loop with a recording transport and a holder around it."""

    async def main() -> None:
        t = Recorder()
        await check(t, HeadHolder(t, asyncio.get_running_loop()))  # type: ignore[arg-type]

    asyncio.run(main())


def test_the_head_waits_for_the_body_and_both_leave_in_one_write() -> None:
    with_holder(_the_head_waits_for_the_body_and_both_leave_in_one_write)


async def _the_head_waits_for_the_body_and_both_leave_in_one_write(t: Recorder, holder: HeadHolder) -> None:
    holder.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert t.writes == []
    holder.write(b"{}")
    assert t.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    holder.write(b"more")  # later chunks of a streamed body pass straight through
    assert t.writes[-1] == b"more"
    await asyncio.sleep(0)  # the flush scheduled for the head finds nothing held
    assert len(t.writes) == 2
    assert holder.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's


def test_an_interim_answer_passes_and_the_real_head_is_held() -> None:
    with_holder(_an_interim_answer_passes_and_the_real_head_is_held)


async def _an_interim_answer_passes_and_the_real_head_is_held(t: Recorder, holder: HeadHolder) -> None:
    holder.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    holder.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    holder.write(b"{}")
    assert t.writes[1:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_a_head_whose_body_does_not_follow_goes_at_the_end_of_the_loop_iteration() -> None:
    with_holder(_a_head_whose_body_does_not_follow_goes_at_the_end_of_the_loop_iteration)


async def _a_head_whose_body_does_not_follow_goes_at_the_end_of_the_loop_iteration(
    t: Recorder, holder: HeadHolder
) -> None:
    holder.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert t.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    holder.write(b"5\r\nhello\r\n")
    assert t.writes[-1] == b"5\r\nhello\r\n"


def test_a_large_body_follows_the_head_without_a_copy_and_close_sends_a_held_head() -> None:
    with_holder(_a_large_body_follows_the_head_without_a_copy_and_close_sends_a_held_head)


async def _a_large_body_follows_the_head_without_a_copy_and_close_sends_a_held_head(
    t: Recorder, holder: HeadHolder
) -> None:
    big = b"x" * (JOIN_LIMIT + 1)
    holder.write(b"HEAD\r\n\r\n")
    holder.write(big)
    assert t.writes == [b"HEAD\r\n\r\n", big]
    other = Recorder()
    held = HeadHolder(other, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    held.close()
    assert other.writes == [b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"]
    assert other.closed


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
