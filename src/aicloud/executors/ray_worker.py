"""One worker of a job on a Ray node: the body of the detached actor the Ray executor creates.

:class:`JobWorker` is wrapped with ``ray.remote`` by :mod:`aicloud.executors.ray` (one actor
per worker, holding the worker's CPUs and GPUs for as long as it lives). On its node it
plays the part the supervisor plays for the local executor:

* it starts the workload (``argv`` with the job's environment) through
  :mod:`aicloud.executors.ray_spawn`, in a process group of its own, stdin ``/dev/null``,
  stdout and stderr into one pipe; the workload dies with the actor (``PR_SET_PDEATHSIG``);
* it copies the pipe to a node-local log file (0600, in a private 0700 folder), keeping at
  most ``max_log_bytes`` and ending with a marker line when it dropped the rest; the
  executor pulls the log from an offset with :meth:`JobWorker.pull`;
* when the workload's main process exits it kills whatever the job left in its process
  group and records the exit code (negative = killed by that signal), CPU seconds and peak
  RSS (from the spawner) and wall seconds;
* :meth:`JobWorker.terminate` sends SIGTERM to the group and SIGKILL ``grace_s`` later
  (idempotent); :meth:`JobWorker.shutdown` kills the group at once and removes the
  worker's folders, before the executor kills the actor itself.

Only the standard library and aicloud's standard-library modules here (``ray`` is imported
inside :meth:`JobWorker.node`): every
method returns quickly, so the executor never waits long for an answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from aicloud.executors.procgroup import exit_code, signal_group

__all__ = ["JobWorker"]

CHUNK = 64 * 1024
DRAIN_AFTER_EXIT_S = 2.0
START_TIMEOUT_S = 30.0
SPAWN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_spawn.py")


class _CappedLog:
    """Appends to a log file up to ``cap`` bytes, then drops (and counts) the rest."""

    def __init__(self, path: str, cap: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.cap = cap
        self.written = 0
        self.dropped = 0
        self.closed = False
        self._last = b"\n"
        self._lock = threading.Lock()

    def _raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def write(self, data: bytes) -> None:
        with self._lock:
            if not self.closed:  # a straggler after close() must not write to a reused fd
                self._write(data)

    def _write(self, data: bytes) -> None:
        keep = data[: max(0, self.cap - self.written)]
        if keep:
            self._raw(keep)
            self.written += len(keep)
            self._last = keep[-1:]
        if len(keep) < len(data):
            if self.dropped == 0:  # readers of a live log see the truncation at once
                lead = b"" if self._last == b"\n" else b"\n"
                self._raw(lead + f"[aicloud: log truncated at {self.cap} bytes]\n".encode())
            self.dropped += len(data) - len(keep)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.dropped:
                self._raw(f"[aicloud: {self.dropped} more bytes dropped]\n".encode())
            os.close(self.fd)


def _killpg(pgid: int | None, sig: int, sandboxed: bool = False) -> None:
    if pgid is not None:
        signal_group(pgid, sig, sandboxed=sandboxed)


class JobWorker:
    """One worker (rank) of a job; see the module docstring. Thread-safe."""

    def __init__(self, job_id: str, rank: int, max_log_bytes: int, gpus: int = 0) -> None:
        self.job_id = job_id
        self.rank = rank
        self.gpus = gpus
        self.dir = tempfile.mkdtemp(prefix=f"aicloud-ray-{job_id}-{rank}-")
        self.log_path = os.path.join(self.dir, "job.log")
        self.log = _CappedLog(self.log_path, max(1, max_log_bytes))
        self.workdir: str | None = None
        self.pid: int | None = None
        self.exit: dict[str, Any] | None = None
        self.cancelled_at: float | None = None
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._start_error: str | None = None
        self.sandboxed = False

    # -- calls from the executor ---------------------------------------------------------------

    def node(self) -> dict[str, Any]:
        """Where this worker runs, and a free TCP port there (rank 0's is the rendezvous port)."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "port": port,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()] if self.gpus else [],
        }

    def start(
        self, argv: list[str], env: dict[str, str], cwd: str | None, sandbox: dict[str, Any] | None = None
    ) -> int:
        """Start the workload (once); its pid. ``cwd`` None: a private working folder here.

        ``sandbox`` (``{"hidden": [...], "rlimits": {...}}``): run it in this node's workload
        sandbox (:mod:`aicloud.executors.sandbox`), built here."""
        with self._lock:
            if self.pid is not None or self._started.is_set():
                return self.pid or 0
            env = dict(env)
            if cwd is None:
                self.workdir = cwd = tempfile.mkdtemp(prefix=f"aicloud-job-{self.job_id}-")
                env.setdefault("AICLOUD_WORKDIR", cwd)
                output = env.setdefault("AICLOUD_OUTPUT_DIR", os.path.join(cwd, "output"))
                if os.path.abspath(output).startswith(cwd + os.sep):
                    os.makedirs(output, mode=0o700, exist_ok=True)
            writable = []
            if envs := env.get("AICLOUD_ENVS_DIR"):  # a runtime env: its workspace's cache on this node
                os.makedirs(envs, exist_ok=True)
                os.chmod(envs, 0o777)  # shared by the workspace's workloads, a uid each (executors/envrun.py)
                writable.append(envs)
            if sandbox is not None:
                # a runtime env on another Python: its installation, read-only
                readonly = [p] if (p := env.get("AICLOUD_ENV_PYTHON_PREFIX")) else []
                argv = self._sandboxed(argv, cwd, sandbox, writable, readonly)
            threading.Thread(target=self._run, args=(argv, env, cwd), daemon=True).start()
        if not self._started.wait(START_TIMEOUT_S):
            raise RuntimeError(f"worker {self.rank}: the workload did not start in {START_TIMEOUT_S}s")
        if self._start_error is not None:
            raise RuntimeError(f"worker {self.rank}: {self._start_error}")
        return self.pid or 0

    def pull(self, offset: int, limit: int) -> dict[str, Any]:
        """Up to ``limit`` log bytes from ``offset``, the log's size now, and the exit record
        (None while the workload runs; once set, the log is complete)."""
        with self._lock:
            done = self.exit
        data = b""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if offset < size:
                f.seek(offset)
                data = f.read(limit)
            return {"data": data, "size": size, "exit": done, "pid": self.pid}
        return {"data": b"", "size": 0, "exit": done, "pid": self.pid}

    def terminate(self, grace_s: float) -> None:
        """SIGTERM the workload's process group now, SIGKILL it ``grace_s`` later. Idempotent."""
        with self._lock:
            if self.exit is not None:
                return
            first = self.cancelled_at is None
            if first:
                self.cancelled_at = time.time()
            pgid = self.pid
        _killpg(pgid, signal.SIGTERM, self.sandboxed)
        if first:
            timer = threading.Timer(max(0.0, grace_s), self._kill)
            timer.daemon = True
            timer.start()

    def shutdown(self) -> None:
        """Kill the workload's group at once and remove this worker's folders (log included)."""
        self._kill()
        for path in (self.workdir, self.dir):
            if path:
                shutil.rmtree(path, ignore_errors=True)

    def _sandboxed(
        self, argv: list[str], cwd: str, spec: dict[str, Any], writable: list[str], readonly: list[str]
    ) -> list[str]:
        from aicloud.executors.sandbox import Sandbox, sandbox_uid

        box = Sandbox.detect(hidden=[*spec.get("hidden", []), self.dir])
        uid = sandbox_uid(self.job_id)
        if cwd == self.workdir:
            box.give(cwd, uid)
        rlimits = {name: (int(v[0]), int(v[1])) for name, v in (spec.get("rlimits") or {}).items()}
        self.sandboxed = True
        return box.wrap(
            argv, workdir=cwd, uid=uid, gpus=self.gpus, rlimits=rlimits, writable=writable, readonly=readonly
        )

    # -- the workload ------------------------------------------------------------------------

    def _kill(self) -> None:
        with self._lock:
            pgid = self.pid if self.exit is None else None
        _killpg(pgid, signal.SIGKILL)

    def _run(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        """The thread that owns the workload: start it, copy its output, wait for its end.

        It is the thread that forks, and it lives as long as the workload, so
        PR_SET_PDEATHSIG fires only when the actor dies.
        """
        started = time.monotonic()
        usage_path = os.path.join(self.dir, "usage.json")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SPAWN, usage_path, str(os.getpid()), "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                process_group=0,
                close_fds=True,
            )
        except OSError as exc:
            self.log.write(f"[aicloud: could not start {argv[0]!r}: {exc}]\n".encode())
            self._record(127, {}, started)
            self._started.set()
            return
        with self._lock:
            self.pid = proc.pid
            cancelled = self.cancelled_at is not None
        self._started.set()
        if cancelled:  # cancelled while starting
            _killpg(proc.pid, signal.SIGTERM, self.sandboxed)
        assert proc.stdout is not None
        reader = threading.Thread(target=self._copy, args=(proc.stdout.fileno(),), daemon=True)
        reader.start()
        proc.wait()
        _killpg(proc.pid, signal.SIGKILL)  # whatever the job left behind in its group
        reader.join(DRAIN_AFTER_EXIT_S)  # a descendant that escaped the group may hold the pipe
        usage: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError), open(usage_path) as f:
            usage = json.load(f)  # absent when the spawner was SIGKILLed with the workload
        self._record(exit_code(proc.returncode, sandboxed=self.sandboxed), usage, started)

    def _copy(self, pipe: int) -> None:
        while data := os.read(pipe, CHUNK):
            self.log.write(data)

    def _record(self, code: int, usage: dict[str, Any], started: float) -> None:
        record: dict[str, Any] = {
            "exit_code": code,
            "wall_seconds": round(time.monotonic() - started, 3),
            "finished_at": time.time(),
            "log_bytes": self.log.written,
            "log_dropped": self.log.dropped,
        }
        record.update({k: usage[k] for k in ("cpu_seconds", "peak_rss_bytes") if k in usage})
        with self._lock:
            self.log.close()
            self.exit = record
