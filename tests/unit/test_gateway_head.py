"""The gateway's HTTP/1.1 client (aicloud.gateway.upstream): parsing an answer's head. On real sockets:
tests/integration/test_gateway_upstream.py."""

from __future__ import annotations

import pytest

from aicloud.gateway.upstream import Broken, Head


def test_head_parsing() -> None:
    head = Head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\nX-A: b", "GET")
    assert (head.status, head.length, head.keep_alive) == (404, 12, True)
    assert head.headers == [(b"content-length", b"12"), (b"x-a", b"b")]
    assert Head(b"HTTP/1.1 200 OK\r\nContent-Length: 12", "HEAD").length == 0
    assert not Head(b"HTTP/1.0 200 OK\r\nContent-Length: 1", "GET").keep_alive
    for bad in (b"HTTP/1.1 20x OK", b"HTTP/1.1 200 OK\r\nno colon", b"HTTP/1.1 200 OK\r\nContent-Length: -1"):
        with pytest.raises(Broken):
            Head(bad, "GET")
