"""TCP helpers: the liveness settings of the connections between the gateway and the replicas (both
ends use them), and :func:`free_port`."""

from __future__ import annotations

import asyncio
import contextlib
import socket

#: TCP keep-alive on both ends of every gateway → replica connection: after this many seconds of
#: silence the kernel probes the peer every KEEPALIVE_PROBE_S, and gives up after KEEPALIVE_PROBES
#: unanswered probes.
#: A peer whose node died without closing its connections (power loss, a network partition: no FIN,
#: no RST) is then noticed in about 25 s: by the gateway instead of its read timeout (300 s), by the
#: replica instead of never. A busy peer is not affected, since its kernel answers the probes.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_PROBE_S = 5
KEEPALIVE_PROBES = 3
#: Data the replica has not acknowledged for this long also ends the connection (TCP_USER_TIMEOUT).
UNACKED_TIMEOUT_MS = 30_000


def probe_liveness(transport: asyncio.BaseTransport) -> None:
    """Turn on TCP keep-alive (and the unacknowledged-data timeout) for ``transport``'s socket, so a
    peer that vanished without closing the connection fails it (see :data:`KEEPALIVE_IDLE_S`).
    Options this platform lacks are left out."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    options = [
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", KEEPALIVE_PROBE_S),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", KEEPALIVE_PROBES),
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", UNACKED_TIMEOUT_MS),
    ]
    for level, name, value in options:
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):  # not a TCP socket, or not supported here
                sock.setsockopt(level, option, value)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` nobody listens on now (whoever asked binds it a moment later; a race is
    possible, but the kernel does not hand out the same ephemeral port again soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
