"""The readiness probe and the watcher that probes starting replicas between reconcile passes."""

from __future__ import annotations

import threading
import time

from gateway_helpers import EchoReplica, ThreadServer

from aicloud.controllers.probes import StartWatcher, http_probe
from aicloud.wire.tcp import free_port


def test_http_probe_is_true_only_for_a_200() -> None:
    server = ThreadServer(EchoReplica("r")).start()
    try:
        assert http_probe(server.url)
        assert not http_probe(server.url.replace(str(server.port), str(free_port())))  # refused
    finally:
        server.stop()


def test_watcher_calls_on_ready_once_per_replica_and_forgets_discarded_ones() -> None:
    ready_urls: set[str] = set()
    probed: list[str] = []
    woken = threading.Semaphore(0)

    def probe(url: str) -> bool:
        probed.append(url)
        return url in ready_urls

    watcher = StartWatcher(probe, woken.release, interval=0.005)
    watcher.start()
    try:
        watcher.add("r1", "http://one")
        watcher.add("r2", "http://two")
        ready_urls.add("http://one")
        assert woken.acquire(timeout=10)
        watcher.discard("r2")
        count = len(probed)
        deadline = time.monotonic() + 10
        while len(probed) == count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert not woken.acquire(timeout=0.05)  # r1 woke once; r2 was discarded before it answered
        assert "http://one" in probed and probed.count("http://one") <= probed.count("http://two") + 1
    finally:
        watcher.stop(timeout=5)
    assert not watcher.running
