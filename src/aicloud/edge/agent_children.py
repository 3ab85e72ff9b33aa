"""The node agent's children: one edge server process per assignment, watched and restarted.

Each child is ``python -m aicloud.edge.serve BUNDLE --key-file trusted.pub --token-file keys/<id>.key
--port P`` (:func:`aicloud.edge.serve.main`) in a session of its own (a Ctrl-C at the agent's terminal
reaches the agent, which stops them), with the read end of a pipe only the agent holds: when the agent
is gone, however it went, the child stops and frees its port. The :class:`Supervisor` thread notices
a child that exited and starts it again after a capped exponential backoff (reset once it stayed
ready for a minute), marks it ready when ``/v2/models/{model}/versions/{version}/ready`` answers 200
to its serve key, and restarts one that is not ready within :data:`START_TIMEOUT_S`.
:meth:`Supervisor.snapshot` reads each ready child's inference statistics (``GET /v2/models/stats``
with its serve key) for the request, error and latency deltas the agent reports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import httpx

from aicloud.edge.agent_state import Backoff, NodeDisk, Placed

START_TIMEOUT_S = 300.0  # a child not ready by then is restarted
STABLE_S = 60.0  # ready this long: its restart backoff starts over
STOP_GRACE_S = 10.0
LOG_CAP_BYTES = 4 << 20

State = Literal["starting", "ready", "failed"]


@dataclass
class Counts:
    requests: int = 0
    errors: int = 0
    latency_s: float = 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.requests + other.requests, self.errors + other.errors, self.latency_s + other.latency_s
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            max(0, self.requests - other.requests),
            max(0, self.errors - other.errors),
            max(0.0, self.latency_s - other.latency_s),
        )


@dataclass
class Child:
    placed: Placed
    proc: subprocess.Popen[bytes] | None = None
    pipe: int | None = None  # the write end; closing it stops the child
    state: State = "starting"
    message: str = ""
    started: float = 0.0
    ready_since: float | None = None
    next_start: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    carried: Counts = field(default_factory=Counts)  # counted by earlier processes of this replica
    current: Counts = field(default_factory=Counts)  # the running process's own counters
    reported: Counts = field(default_factory=Counts)  # the total the control plane has

    @property
    def total(self) -> Counts:
        return self.carried + self.current


@dataclass
class Status:
    """One child as the agent reports it: its state, and its counts since the last accepted report."""

    replica_id: str
    state: State
    port: int | None
    message: str
    delta: Counts
    total: Counts


def probe_host(host: str) -> str:
    """Where the agent reaches a child listening on ``host``."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


class Supervisor:
    """Keeps one child running per placement it is given (:meth:`ensure`) until :meth:`remove`."""

    def __init__(
        self,
        disk: NodeDisk,
        host: str,
        say: Callable[[str], None],
        python: str = sys.executable,
        tick_s: float = 1.0,
    ) -> None:
        self.disk, self.host, self.say, self.python, self.tick_s = disk, host, say, python, tick_s
        self.base = (
            f"http://{probe_host(host)}" if ":" not in probe_host(host) else f"http://[{probe_host(host)}]"
        )
        self.children: dict[str, Child] = {}
        self.lock = threading.RLock()
        self.changed = threading.Event()  # a child changed state: worth reporting now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.http = httpx.Client(timeout=httpx.Timeout(3.0, connect=2.0))

    # --- what the agent asks

    def ensure(self, placed: Placed, *, restart: bool = False) -> None:
        """Serve ``placed``: start its child, or restart it when it serves another placement (or
        ``restart``: its key changed)."""
        with self.lock:
            child = self.children.get(placed.replica_id)
            if child is not None and child.placed == placed and child.proc is not None and not restart:
                return
            if child is not None:
                self._terminate(child)
            fresh = Child(placed=placed)
            if child is not None:
                fresh.carried, fresh.reported = child.total, child.reported
            self.children[placed.replica_id] = fresh
            self._spawn(fresh)

    def remove(self, replica_id: str) -> bool:
        """Stop a replica's child for good (waits for it to exit)."""
        with self.lock:
            child = self.children.pop(replica_id, None)
        if child is None:
            return False
        self._terminate(child)
        self.changed.set()
        return True

    def stop_all(self) -> int:
        """Stop the watch and every child (SIGTERM to each, then SIGKILL after a grace)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        with self.lock:
            children = list(self.children.values())
            self.children.clear()
        for child in children:
            self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            self._reap(child, max(0.1, deadline - time.monotonic()))
        self.http.close()
        return len(children)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="edge-supervisor", daemon=True)
        self._thread.start()

    def any_starting(self) -> bool:
        with self.lock:
            return any(c.state == "starting" for c in self.children.values())

    def snapshot(self) -> list[Status]:
        """Each child's state and counts (ready children's statistics read now)."""
        with self.lock:
            children = list(self.children.values())
        out = []
        for child in children:
            if child.state == "ready" and child.proc is not None:
                stats = self._stats(child)
                if stats is not None:
                    child.current = stats
            total = child.total
            out.append(
                Status(
                    replica_id=child.placed.replica_id,
                    state=child.state,
                    port=child.placed.port,
                    message=child.message,
                    delta=total - child.reported,
                    total=total,
                )
            )
        return out

    def accepted(self, statuses: list[Status]) -> None:
        """The control plane took these counts: the next report's deltas start from them."""
        with self.lock:
            for s in statuses:
                child = self.children.get(s.replica_id)
                if child is not None:
                    child.reported = s.total

    # --- the watch

    def _watch(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception as exc:
                self.say(f"supervisor: {type(exc).__name__}: {exc}")

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            children = list(self.children.values())
        for child in children:
            with self.lock:
                if self.children.get(child.placed.replica_id) is not child:
                    continue  # removed or replaced meanwhile
                if child.proc is None:
                    if now >= child.next_start and not self._stop.is_set():
                        self._spawn(child)
                    continue
                code = child.proc.poll()
                if code is not None:
                    self._died(child, code, now)
                    continue
                if child.state == "ready" and child.ready_since and now - child.ready_since >= STABLE_S:
                    child.backoff.reset()
            if child.state == "starting":
                self._probe(child, now)

    def _probe(self, child: Child, now: float) -> None:
        # the model's own readiness with its key: a stranger on the port (our child then fails to
        # bind and exits) is never taken for it
        p = child.placed
        url = f"{self.base}:{p.port}/v2/models/{quote(p.model, safe='')}/versions/{p.version}/ready"
        headers = {"Authorization": f"Bearer {self.disk.read_key(p.replica_id)}"}
        try:
            ready = self.http.get(url, headers=headers).status_code == 200
        except httpx.HTTPError:
            ready = False
        with self.lock:
            if self.children.get(child.placed.replica_id) is not child or child.proc is None:
                return
            if ready:
                child.state, child.message, child.ready_since = "ready", "", now
                self.say(f"ready: {child.placed.label}")
                self.changed.set()
            elif now - child.started > START_TIMEOUT_S:
                self.say(f"not ready after {START_TIMEOUT_S:.0f}s, restarting: {child.placed.label}")
                self._terminate(child)
                self._died(child, None, now)

    def _died(self, child: Child, code: int | None, now: float) -> None:
        self._close_pipe(child)
        child.proc = None
        child.carried, child.current = child.total, Counts()
        delay = child.backoff.next()
        child.next_start = now + delay
        why = f"exited with status {code}" if code is not None else "was not ready in time"
        last = self._last_line(child)
        child.state = "failed"
        child.message = f"{why}{': ' + last if last else ''}; restarting in {delay:.0f}s"
        child.ready_since = None
        tail = f" ({last})" if last else ""
        self.say(f"child {why}, restarting in {delay:.1f}s: {child.placed.label}{tail}")
        self.changed.set()

    # --- processes

    def command(self, placed: Placed, fd: int) -> list[str]:
        return [
            self.python,
            "-m",
            "aicloud.edge.serve",
            str(self.disk.bundle_path(placed.version_id)),
            "--key-file",
            str(self.disk.trusted_key),
            "--token-file",
            str(self.disk.key_path(placed.replica_id)),
            "--port",
            str(placed.port),
            "--host",
            self.host,
            "--threads",
            str(placed.threads),
            "--max-batch-size",
            str(placed.max_batch_size),
            "--max-wait-ms",
            str(placed.max_wait_ms),
            "--parent-fd",
            str(fd),
        ]

    def _spawn(self, child: Child) -> None:
        log = self.disk.log_path(child.placed.replica_id)
        if log.exists() and log.stat().st_size > LOG_CAP_BYTES:
            log.replace(log.with_suffix(".log.1"))
        read, write = os.pipe()
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                child.proc = subprocess.Popen(
                    self.command(child.placed, read),
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=subprocess.STDOUT,
                    pass_fds=(read,),
                    start_new_session=True,
                    env={k: v for k, v in os.environ.items() if k not in ("AICLOUD_TOKEN",)},
                )
            finally:
                os.close(fd)
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        child.pipe = write
        child.state, child.started, child.ready_since = "starting", time.monotonic(), None
        child.message = "starting"
        self.say(f"starting (pid {child.proc.pid}): {child.placed.label}")
        self.changed.set()

    def _signal(self, child: Child, sig: int) -> None:
        if child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, sig)

    def _reap(self, child: Child, timeout: float) -> None:
        if child.proc is not None:
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                child.proc.wait(10)
        self._close_pipe(child)

    def _terminate(self, child: Child) -> None:
        self._signal(child, signal.SIGTERM)
        self._reap(child, STOP_GRACE_S)
        child.proc = None

    @staticmethod
    def _close_pipe(child: Child) -> None:
        if child.pipe is not None:
            os.close(child.pipe)
            child.pipe = None

    def _last_line(self, child: Child) -> str:
        path: Path = self.disk.log_path(child.placed.replica_id)
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - 2000))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip()[:300] if lines else ""

    def _stats(self, child: Child) -> Counts | None:
        key = self.disk.read_key(child.placed.replica_id)
        try:
            r = self.http.get(
                f"{self.base}:{child.placed.port}/v2/models/stats", headers={"Authorization": f"Bearer {key}"}
            )
            if r.status_code != 200:
                return None
            stats = r.json()["model_stats"][0]["inference_stats"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            return None
        ok, fail = stats["success"], stats["fail"]
        return Counts(
            requests=int(ok["count"]) + int(fail["count"]),
            errors=int(fail["count"]),
            latency_s=(int(ok["ns"]) + int(fail["ns"])) / 1e9,
        )
