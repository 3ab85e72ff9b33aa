"""The watcher that probes starting replicas between reconcile passes (the HTTP probe against a real
server: tests/integration/test_probes.py)."""

from __future__ import annotations

import threading
import time

from aicloud.controllers.probes import StartWatcher


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
        time.sleep(0.25)  # 50 intervals: r2, had it been kept, would have been probed again by now
        assert not woken.acquire(timeout=0.05)  # r1 woke once; r2 was discarded before it answered
        assert "http://one" in probed and probed.count("http://one") <= probed.count("http://two") + 1
    finally:
        watcher.stop(timeout=5)
    assert not watcher.running
