"""How the deployment controller learns that a replica answers: the readiness probe and
:class:`StartWatcher`, which probes starting replicas between reconcile passes.

A replica binds its port only once its model is loaded and warmed up, so the first successful
``GET /v2/health/ready`` is the moment it can serve. Probing only at each reconcile pass (every
``interval``, 0.2 s) would add up to that much to every cold start; the watcher probes each
starting replica every ``PROBE_INTERVAL_S`` (a refused connection costs microseconds) in one
thread and calls ``on_ready`` (the loop's ``wake``) as soon as one answers.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["PROBE_INTERVAL_S", "PROBE_TIMEOUT_S", "Probe", "StartWatcher", "http_probe"]

log = logging.getLogger("aicloud.controllers.probes")

PROBE_TIMEOUT_S = 1.0
PROBE_INTERVAL_S = 0.02

Probe = Callable[[str], bool]
"""``probe(replica_url)`` → whether the replica answers ``/v2/health/ready`` with 200."""


def http_probe(url: str) -> bool:
    """``GET {url}/v2/health/ready`` with a short timeout; any error is "not ready".

    Plain ``http.client``: a probe runs many times a second while a replica starts, and needs no
    TLS context, pool or client object.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class StartWatcher:
    """Probes the replicas it was told about until each answers, then calls ``on_ready()`` (once per
    replica, from its own thread). Thread-safe; :meth:`stop` ends the thread."""

    def __init__(
        self, probe: Probe, on_ready: Callable[[], None], interval: float = PROBE_INTERVAL_S
    ) -> None:
        self.probe = probe
        self.on_ready = on_ready
        self.interval = interval
        self._starting: dict[str, str] = {}  # replica id → url
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="aicloud-replica-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def add(self, replica_id: str, url: str) -> None:
        """Watch a replica that was just launched (probed while the watcher runs)."""
        self._starting[replica_id] = url
        self._changed.set()

    def discard(self, replica_id: str) -> None:
        """Stop watching (the replica is ready, retired or gone)."""
        self._starting.pop(replica_id, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            starting = list(self._starting.items())
            if not starting:
                self._changed.wait(1.0)
                self._changed.clear()
                continue
            for replica_id, url in starting:
                try:
                    ready = self.probe(url)
                except Exception:
                    log.exception("probing replica %s failed", replica_id)
                    ready = False
                if ready:
                    self._starting.pop(replica_id, None)
                    self.on_ready()
            self._stop.wait(self.interval)
