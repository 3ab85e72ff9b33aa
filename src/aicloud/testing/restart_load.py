"""Clients predicting steadily against one deployment while the control plane is killed
(SIGKILL) and restarted: what they saw. Shared by ``bench/restart_under_load.py`` (which
prints and stores it) and ``tests/security/test_restart_under_load.py`` (which asserts on it).

The deployment is a small Service (:data:`SERVICE`) whose one handler answers with the id and
pid of the replica that served it, so each successful call says which replica process answered:
the first success after the restart tells whether the replica was adopted (same id and pid as
before the kill) or replaced (a new process, after a cold start).

Every call is recorded with its start and end (``time.monotonic``) and its outcome. The windows
are read from the calls themselves:

* ``t_kill``: just before the SIGKILL;
* ``t_back``: the start of the first call after ``t_kill`` that got any HTTP answer, i.e. the
  moment the restarted control plane was taking connections.

A failed call is *in flight at the kill* when it started before ``t_kill``, *while down* when it
started in ``[t_kill, t_back)`` (refused connections: a client that calls a control plane that
is down fails), and *after the restart* when it started at ``t_back`` or later; an endpoint that
stays up through a restart has none of the last kind.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from aicloud.client import Client
from aicloud.testing.server import ServerProcess

__all__ = [
    "SERVICE",
    "Call",
    "LoadClients",
    "RestartReport",
    "deploy_who",
    "restart_under_load",
    "worker_pid",
]

SERVICE = '''
import os

from aicloud import Service, handler


class Who(Service):
    """Answers with the replica that served the call."""

    @handler
    def who(self, text: str) -> dict[str, str]:
        return {"text": text, "replica": os.environ.get("AICLOUD_REPLICA_ID", ""), "pid": str(os.getpid())}
'''


@dataclass(frozen=True)
class Call:
    """One call: when it started and ended, and what came back."""

    start: float
    end: float
    ok: bool
    outcome: str  # "ok", "HTTP 503", or the exception's class name (ConnectError, ReadError...)
    answered: bool  # an HTTP answer came back (any status)
    replica: str = ""
    pid: int = 0


class LoadClients:
    """``clients`` threads calling ``POST <url>/v1/endpoints/<name>/who`` back to back, each on its
    own keep-alive connection. A failed call is recorded and followed by ``fail_pause`` seconds
    of rest (a client that finds the server down retries, but does not spin)."""

    def __init__(
        self,
        url: str,
        token: str,
        name: str,
        *,
        clients: int = 4,
        fail_pause: float = 0.01,
        timeout: float = 60.0,
    ) -> None:
        self.url, self.token, self.name = url, token, name
        self.fail_pause, self.timeout = fail_pause, timeout
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> LoadClients:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Call]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        with self._lock:
            return sorted(self.calls, key=lambda c: c.start)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        path = f"/v1/endpoints/{self.name}/who"
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout) as http:
            while not self._stop.is_set():
                call = self._call(http, path)
                with self._lock:
                    self.calls.append(call)
                if not call.ok:
                    time.sleep(self.fail_pause)

    @staticmethod
    def _call(http: httpx.Client, path: str) -> Call:
        start = time.monotonic()
        try:
            r = http.post(path, json={"text": "x"})
        except httpx.HTTPError as exc:
            return Call(start, time.monotonic(), False, type(exc).__name__, answered=False)
        end = time.monotonic()
        if r.status_code != 200:
            return Call(start, end, False, f"HTTP {r.status_code}", answered=True)
        body = r.json()
        return Call(start, end, True, "ok", answered=True, replica=body["replica"], pid=int(body["pid"]))


@dataclass
class RestartReport:
    """What the clients saw; see the module docstring for the windows."""

    clients: int
    sent: int
    ok: int
    failed: int
    failed_in_flight_at_kill: int
    failed_while_down: int
    failed_after_restart: int
    failures_by_outcome: dict[str, int]
    failures_after_restart_by_outcome: dict[str, int]
    down_s: float  # t_kill → t_back
    restart_to_healthy_s: float  # the new server process launched → its /healthz answered
    back_to_first_ok_s: float | None  # t_back → the end of the first successful call started after t_kill
    kill_to_first_ok_s: float | None
    replica_before: str
    pid_before: int  # as the replica sees it (inside a sandbox's pid namespace, not the host's)
    replica_first_ok_after: str
    pid_first_ok_after: int
    worker_pid_before: int  # the replica's process on the host (the executor's child.json)
    worker_alive_after: bool  # that process still ran at the end: never restarted
    replicas_after: list[str]  # every replica id that answered a call started at t_back or later
    same_replica: bool
    ok_per_s_before: float
    ok_per_s_after: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def deploy_who(client: Client, folder: Path, name: str, timeout: float = 180.0) -> tuple[str, int]:
    """Deploy :data:`SERVICE` as ``name`` (one replica, no autoscaling) and wait for it; returns the
    (replica id, pid) that answers."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "who.py").write_text(SERVICE)
    dep = client.deployments.create(
        name, service=folder, entrypoint="who.py:Who", min_replicas=1, max_replicas=1
    )
    dep.wait_ready(timeout=timeout)
    answer = dep.call("who", {"text": "hello"})
    return str(answer["replica"]), int(answer["pid"])


def worker_pid(home: Path, replica_id: str) -> int:
    """The host pid of a replica's process, from the local executor's ``child.json``; 0 if unknown."""
    try:
        return int(json.loads((home / "jobs" / replica_id / "child.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _first(
    calls: list[Call], since: float, *, ok: bool | None = None, answered: bool | None = None
) -> Call | None:
    for c in calls:
        if c.start >= since and (ok is None or c.ok == ok) and (answered is None or c.answered == answered):
            return c
    return None


def _rate(calls: list[Call], start: float, end: float) -> float:
    if end <= start:
        return 0.0
    return round(sum(1 for c in calls if c.ok and start <= c.end < end) / (end - start), 1)


def restart_under_load(
    server: ServerProcess,
    name: str,
    *,
    clients: int = 4,
    before_s: float = 4.0,
    down_s: float = 1.0,
    after_s: float = 6.0,
    fail_pause: float = 0.01,
    workdir: Path | None = None,
    delete: bool = True,
) -> RestartReport:
    """Deploy, load with ``clients`` clients for ``before_s``, SIGKILL the control plane, restart it
    ``down_s`` later, keep the load ``after_s`` past its health check, and report. ``server`` runs
    on entry and still runs on return; so does the deployment unless ``delete``."""
    folder = workdir or server.home.parent / f"{name}-service"
    with Client(url=server.url, token=server.token) as client:
        replica_before, pid_before = deploy_who(client, folder, name)
    worker_before = worker_pid(server.home, replica_before)
    load = LoadClients(server.url, server.token, name, clients=clients, fail_pause=fail_pause).start()
    t_load = time.monotonic()
    time.sleep(before_s)
    t_kill = time.monotonic()
    server.kill()
    time.sleep(down_s)
    t_restart = time.monotonic()
    server.start()
    t_healthy = time.monotonic()
    time.sleep(after_s)
    calls = load.stop()
    t_end = time.monotonic()
    worker_alive = worker_before > 0 and _alive(worker_before)
    if delete:
        with Client(url=server.url, token=server.token) as client:
            client.deployments.get(name).delete()

    back = _first(calls, t_kill, answered=True)
    t_back = back.start if back is not None else t_end
    first_ok = _first(calls, t_kill, ok=True)
    failures = [c for c in calls if not c.ok]
    after = [c for c in failures if c.start >= t_back]
    replicas_after = sorted({c.replica for c in calls if c.ok and c.start >= t_back})
    return RestartReport(
        clients=clients,
        sent=len(calls),
        ok=len(calls) - len(failures),
        failed=len(failures),
        failed_in_flight_at_kill=sum(1 for c in failures if c.start < t_kill),
        failed_while_down=sum(1 for c in failures if t_kill <= c.start < t_back),
        failed_after_restart=len(after),
        failures_by_outcome=dict(collections.Counter(c.outcome for c in failures)),
        failures_after_restart_by_outcome=dict(collections.Counter(c.outcome for c in after)),
        down_s=round(t_back - t_kill, 3),
        restart_to_healthy_s=round(t_healthy - t_restart, 3),
        back_to_first_ok_s=round(first_ok.end - t_back, 3) if first_ok else None,
        kill_to_first_ok_s=round(first_ok.end - t_kill, 3) if first_ok else None,
        replica_before=replica_before,
        pid_before=pid_before,
        replica_first_ok_after=first_ok.replica if first_ok else "",
        pid_first_ok_after=first_ok.pid if first_ok else 0,
        worker_pid_before=worker_before,
        worker_alive_after=worker_alive,
        replicas_after=replicas_after,
        same_replica=first_ok is not None
        and (first_ok.replica, first_ok.pid) == (replica_before, pid_before),
        ok_per_s_before=_rate(calls, t_load, t_kill),
        ok_per_s_after=_rate(calls, t_healthy, t_end),
        extra={"load_average": list(os.getloadavg()), "cpus": os.cpu_count()},
    )
