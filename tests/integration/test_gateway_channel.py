"""The gateway → replica channel: the gateway's channels over real sockets (the wire format alone:
``tests/unit/test_wire_frames.py``).

The replicas are the echo replicas of ``gateway_helpers`` on uvicorn with the replica's protocol
(:class:`~aicloud.serving.channel.SniffingProtocol`); the real replica process speaks the channel in
``tests/integration/test_replica.py``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gateway_helpers import EchoReplica, ThreadServer, World, make_world, slot

from aicloud.gateway.channel import Channel
from aicloud.serving.channel import ChannelServer
from aicloud.wire import frames as wire
from aicloud.wire import tcp

# -- the gateway's channels -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with make_world() as w:
        yield w


def test_concurrent_calls_share_one_channel_and_each_gets_its_own_answer(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    world.a.seen.clear()

    def call(i: int) -> bytes:
        body = f"request {i} ".encode() * (i + 1)
        r = httpx.post(world.url("alpha", f"echo?i={i}"), content=body, headers=world.auth(), timeout=30)
        assert r.status_code == 200
        return r.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(48)))
    assert answers == [f"request {i} ".encode() * (i + 1) for i in range(48)]
    assert len(world.a.seen) == 48
    assert len({s.client for s in world.a.seen}) == 1  # one connection carried all of them
    assert {s.headers["authorization"] for s in world.a.seen} == {"Bearer key-alpha"}
    channels = world.host.gateway.channels
    assert channels is not None and (world.a_url, "key-alpha") in channels._open


def test_a_large_answer_crosses_the_channel_in_pieces_next_to_small_ones(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    size = (wire.MAX_FRAME + wire.PIECE // 2) // 256 * 256  # more than one frame may carry

    def call(i: int) -> bytes:
        query = f"size={size}" if i % 4 == 0 else f"i={i}"
        r = httpx.get(world.url("alpha", f"blob?{query}"), headers=world.auth(), timeout=30)
        assert r.status_code == 200
        return r.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(16)))
    for i, content in enumerate(answers):
        if i % 4 == 0:
            assert content == bytes(range(256)) * (size // 256)
        else:
            assert b'"query": "i=%d"' % i in content
    channels = world.host.gateway.channels
    assert channels is not None and (world.a_url, "key-alpha") in channels._open


def _channel_after_one_call(world: World) -> Channel:
    """The gateway's channel to replica ``a``, opened by one call through endpoint ``alpha``."""
    world.endpoint("alpha", slot("r1", world.a_url))
    assert httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth()).status_code == 200
    channels = world.host.gateway.channels
    assert channels is not None
    channel = channels._open[world.a_url, "key-alpha"]
    assert channel.transport is not None
    return channel


def test_a_channel_the_replica_closed_is_opened_again(world: World) -> None:
    first = _channel_after_one_call(world)
    assert first.transport is not None
    first.transport.close()
    deadline = time.monotonic() + 5
    while first.dead is None and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(3):
        assert httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth()).status_code == 200
    channels = world.host.gateway.channels
    assert channels is not None and channels._open[world.a_url, "key-alpha"] is not first


def _probes(sock: socket.socket) -> None:
    """``sock`` has TCP keep-alive with aicloud.wire.tcp's settings."""
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == tcp.KEEPALIVE_IDLE_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == tcp.KEEPALIVE_PROBES
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == tcp.UNACKED_TIMEOUT_MS


def test_the_channel_socket_probes_a_silent_replica(world: World) -> None:
    """A replica whose node vanished sends no FIN: TCP keep-alive is what notices it."""
    channel = _channel_after_one_call(world)
    assert channel.transport is not None
    _probes(channel.transport.get_extra_info("socket"))


def test_the_replica_end_of_a_channel_probes_a_silent_gateway(world: World) -> None:
    """The same from the replica: a gateway gone without a FIN ends the channel and its streams."""
    _channel_after_one_call(world)
    replica_a = world.replica_servers[0].server
    ends = [c for c in replica_a.server_state.connections if isinstance(c, ChannelServer)]
    assert ends, "replica a holds no channel"
    for end in ends:
        _probes(end.transport.get_extra_info("socket"))


def test_a_replica_without_the_channel_is_served_over_http() -> None:
    plain = EchoReplica("plain")
    runner = ThreadServer(plain, http="httptools").start()  # uvicorn as it comes: no channel
    try:
        with make_world() as world:
            world.endpoint("alpha", slot("r1", runner.url))
            with httpx.Client(headers=world.auth(), timeout=30) as h:
                for _ in range(3):
                    r = h.post(world.url("alpha", "echo"), content=b"abc")
                    assert r.status_code == 200 and r.content == b"abc"
            channels = world.host.gateway.channels
            assert channels is not None and runner.url in channels._http_only
            assert [s.path for s in plain.seen][-3:] == ["/echo"] * 3
            channels._http_only[runner.url] = time.monotonic() - 1  # its time is up: asked again
            with httpx.Client(headers=world.auth(), timeout=30) as h:
                assert h.post(world.url("alpha", "echo"), content=b"d").content == b"d"
            assert channels._http_only[runner.url] > time.monotonic() + 30  # refused again
    finally:
        runner.stop()


def test_a_refused_channel_is_a_connect_failure_and_retries_elsewhere(world: World) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    world.endpoint("gamma", slot("dead", dead), slot("r2", world.b_url))
    for _ in range(3):
        r = httpx.post(world.url("gamma", "predict"), json={}, headers=world.auth())
        assert r.status_code == 200 and r.json()["replica"] == "b"
