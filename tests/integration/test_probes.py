"""The readiness probe against a real server (the watcher: tests/unit/test_deployment_probes.py)."""

from __future__ import annotations

from gateway_helpers import EchoReplica, ThreadServer

from aicloud.controllers.probes import http_probe
from aicloud.wire.tcp import free_port


def test_http_probe_is_true_only_for_a_200() -> None:
    server = ThreadServer(EchoReplica("r")).start()
    try:
        assert http_probe(server.url)
        assert not http_probe(server.url.replace(str(server.port), str(free_port())))  # refused
    finally:
        server.stop()
