"""The job supervisor: a tiny process that owns one job's processes, its log and its exit record.

The local executor never holds a job's stdout pipe itself (a pipe read by a control-plane
thread would break when the control plane restarts, and SIGPIPE would kill the job).
Instead it starts this file, which daemonizes and supervises the job:

1. ``python -I supervise.py JOB_DIR MAX_LOG_BYTES GRACE_S [--workers N] [--gpus G] -- ARGV...``
   (cwd and environment are the job's). The process forks: the parent prints ``{"pid",
   "start_time"}`` of the child as JSON on stdout and exits at once; the child is the
   supervisor. It calls ``setsid`` (its own session and process group, no controlling
   terminal) and is re-parented to init, so it outlives the control plane and is nobody's zombie.
2. It starts ``ARGV`` ``N`` times (default 1), each worker in a new process group of its own
   (stdin ``/dev/null``, stdout and stderr into one pipe per worker), and records
   ``{"pid", "pgid", "workers": [{"rank", "pid", "pgid"}...]}`` in ``JOB_DIR/child.json``
   (``pid``/``pgid``: rank 0's). With ``N > 1`` each worker gets ``RANK``, ``LOCAL_RANK``,
   ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE`` (``MASTER_ADDR``/``MASTER_PORT`` come from the
   environment the executor built); with ``G > 0`` each gets its own ``G`` GPUs in
   ``CUDA_VISIBLE_DEVICES`` (a slice of the inherited list, else of ``0..``).
3. It copies the pipes to ``JOB_DIR/job.log`` in 64 KiB reads, keeping at most
   ``MAX_LOG_BYTES``; past the cap it keeps reading (the job never blocks) but drops the
   bytes, and ends the log with one marker line
   ``[aicloud: log truncated at N bytes; M more bytes dropped]``. An existing log (an earlier
   attempt of the same job) is appended to, and counts towards the cap. With several
   workers the log is written in whole lines, and rank ``r > 0``'s lines start with ``[rank r] ``.
4. SIGTERM (or SIGINT, SIGHUP) asks for cancellation: the supervisor forwards SIGTERM to every
   worker's process group and SIGKILLs them ``grace_s`` seconds later (``grace_s`` from
   ``JOB_DIR/cancel.json`` when the control plane wrote one, else ``GRACE_S``).
5. When a worker exits, whatever it left in its process group is killed (like systemd's
   ``KillMode=control-group``). The first worker to fail (exit code != 0) decides the job's
   exit code, and the other workers are stopped (SIGTERM, SIGKILL ``GRACE_S`` later). When all
   have exited, the pipes are drained (2 s at most: a descendant that escaped the group may
   hold one open), and the supervisor writes ``JOB_DIR/exit.json`` atomically (temp file +
   rename) as its last act: ``exit_code`` (the first failure's, negative = killed by that
   signal; 0 when every worker exited 0), ``cpu_seconds`` (``getrusage(RUSAGE_CHILDREN)``:
   every worker and the descendants they waited for), ``peak_rss_bytes`` (the *sum* of the
   workers' peak RSS, each from ``wait4``: an upper bound of the job's peak, as the workers run
   side by side), ``wall_seconds``, ``cancelled``, ``workers``, ``failed_rank``, ``log_bytes``,
   ``log_dropped``, ``finished_at``.

With ``--sandboxed 1`` each worker's ``ARGV`` is a bubblewrap command line
(:mod:`aicloud.executors.sandbox`): a graceful SIGTERM then goes to the workers' processes
but not to bubblewrap's (:func:`~aicloud.executors.procgroup.signal_group`), and bubblewrap's
``128 + N`` for a death by signal N is recorded as ``-N``
(:func:`~aicloud.executors.procgroup.exit_code`).

With ``--template JSON`` (one worker) the supervisor first asks a warm template for the replica
(:mod:`aicloud.executors.template_launch`): the worker is then the template's child, watched through
its connection (signals to its process group, its exit code sent when it ends), and ``ARGV`` (the
cold command line) runs only when the template could not fork.

It imports nothing but the standard library and runs in isolated mode (``-I``), so it
starts in milliseconds, stays small, and a job's ``PYTHONPATH`` cannot change it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded from their files at run time (_sibling)
    from aicloud.executors import procgroup
    from aicloud.executors.capped_log import CappedLog


def _sibling(name: str) -> Any:
    """The module ``name`` of this file's folder (run with ``-I``, this file has no import path)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"aicloud_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if not TYPE_CHECKING:
    procgroup = _sibling("procgroup")

CHUNK = 64 * 1024
DRAIN_AFTER_EXIT_S = 2.0
LOG_NAME = "job.log"
EXIT_NAME = "exit.json"
CHILD_NAME = "child.json"
CANCEL_NAME = "cancel.json"


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is missing, unreadable or not an object."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file, or the whole new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Worker:
    """One of the job's processes: its pipe, partial output line, and exit."""

    def __init__(
        self, rank: int, proc: subprocess.Popen[bytes] | None, prefixed: bool, forked: Any = None
    ) -> None:
        self.rank = rank
        self.proc = proc
        self.forked = forked  # a replica forked from a warm template (template_launch.Forked), not a child
        if forked is not None:
            self.pid, self.fd = forked.pid, forked.fd
        else:
            assert proc is not None and proc.stdout is not None
            self.pid, self.fd = proc.pid, proc.stdout.fileno()
        self.prefix = f"[rank {rank}] ".encode() if prefixed and rank > 0 else b""
        self.line_mode = prefixed
        self.partial = bytearray()
        self.eof = False
        self.exited_at: float | None = None
        self.exit_code: int | None = None
        self.peak_rss = 0

    def lines(self, data: bytes) -> bytes:
        """The complete lines in ``data`` (with what was pending), prefixed; keeps the rest."""
        if not self.line_mode:
            return data
        self.partial += data
        cut = self.partial.rfind(b"\n")
        if cut < 0 and len(self.partial) < CHUNK:
            return b""
        cut = len(self.partial) - 1 if cut < 0 else cut
        whole, self.partial = bytes(self.partial[: cut + 1]), self.partial[cut + 1 :]
        return self._prefixed(whole)

    def rest(self) -> bytes:
        """What is left of an unterminated last line, with a newline."""
        if not self.partial:
            return b""
        whole, self.partial = bytes(self.partial) + b"\n", bytearray()
        return self._prefixed(whole)

    def _prefixed(self, whole: bytes) -> bytes:
        if not self.prefix:
            return whole
        return b"".join(self.prefix + line for line in whole.splitlines(keepends=True))

    def exited(self) -> int | None:
        """The exit code (negative: killed by that signal) once the process has exited, without
        reaping it (its pid, and so its process group id, stays reserved); None while it runs."""
        if self.forked is not None:
            return self.forked.exited()
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.exit_code if self.exit_code is not None else -1
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def reap(self) -> int:
        """Wait for the process and record its code and peak RSS (``wait4``)."""
        if self.forked is not None:
            self.exit_code = self.forked.wait()
            return self.exit_code
        assert self.proc is not None
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        try:
            _, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:
            return self.exit_code if self.exit_code is not None else -1
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.exit_code
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        self.peak_rss = usage.ru_maxrss * scale
        return self.exit_code


def worker_env(base: dict[str, str], rank: int, workers: int, gpus: int) -> dict[str, str]:
    """The environment of worker ``rank``: the torchrun variables, its GPUs."""
    env = dict(base)
    if workers > 1:
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(workers),
            LOCAL_WORLD_SIZE=str(workers),
            GROUP_RANK="0",
        )
    if gpus > 0:
        inherited = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        devices = inherited or [str(i) for i in range(gpus * workers)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[rank * gpus : (rank + 1) * gpus])
    return env


class Supervisor:
    """Runs one job to its end; see the module docstring."""

    def __init__(
        self,
        job_dir: str,
        max_log_bytes: int,
        grace_s: float,
        argv: list[str],
        workers: int = 1,
        gpus: int = 0,
        sandboxed: bool = False,
        template: dict[str, Any] | None = None,
    ) -> None:
        self.job_dir = job_dir
        self.sandboxed = sandboxed  # each worker's argv starts with bwrap (aicloud.executors.sandbox)
        self.max_log_bytes = max_log_bytes
        self.default_grace_s = grace_s
        self.argv = argv
        self.n_workers = workers
        self.gpus = gpus
        self.workers: list[Worker] = []
        self.template = template  # options of a fork from a warm template (one worker), else None
        self.cancel_at: float | None = None  # monotonic time SIGTERM arrived
        self.kill_at: float | None = None  # when to SIGKILL every worker (cancel, or a failed peer)
        self.killed = False
        self.failed: Worker | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.job_dir, name)

    def _grace(self) -> float:
        try:
            with open(self.path(CANCEL_NAME), "rb") as f:
                return float(json.load(f)["grace_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.default_grace_s

    def _killpg(self, sig: int) -> None:
        for worker in self.workers:
            procgroup.signal_group(worker.pid, sig, sandboxed=self.sandboxed)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.cancel_at is None:
            self.cancel_at = time.monotonic()
            deadline = self.cancel_at + self._grace()
            self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)
        self._killpg(signal.SIGTERM)

    def _abort(self) -> int:
        if not self.workers:
            return 127
        self._killpg(signal.SIGKILL)
        codes = [w.reap() for w in self.workers]
        return next((c for c in codes if c != 0), 0)

    def run(self) -> int:
        """Start the job, copy its output to the log until it ends, write ``exit.json``."""
        started = time.monotonic()
        fd = os.open(self.path(LOG_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        log = _sibling("capped_log").CappedLog(fd, self.max_log_bytes, start=os.lseek(fd, 0, os.SEEK_END))
        try:
            exit_code = self._run_workers(log)
        except BaseException as exc:  # record why, and stop the job: nobody watches it any more
            log.write(f"[aicloud: supervisor error: {type(exc).__name__}: {exc}]\n".encode())
            exit_code = self._abort()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        log.finish()
        os.close(fd)
        scale = 1 if sys.platform == "darwin" else 1024
        peak = sum(w.peak_rss for w in self.workers) or usage.ru_maxrss * scale
        write_json_atomic(
            self.path(EXIT_NAME),
            {
                "exit_code": exit_code,
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                "peak_rss_bytes": peak,
                "wall_seconds": round(time.monotonic() - started, 3),
                "cancelled": self.cancel_at is not None,
                "workers": self.n_workers,
                "failed_rank": self.failed.rank if self.failed is not None else None,
                "log_bytes": log.written,
                "log_dropped": log.dropped,
                "finished_at": time.time(),
            },
        )
        return 0

    def _start(self, log: CappedLog) -> int | None:
        """Start every worker; an exit code when one could not start (the others are stopped)."""
        base = dict(os.environ)
        for rank in range(self.n_workers):
            if self.template is not None:
                try:
                    forked = _sibling("template_launch").fork(self.template, base, os.getcwd())
                except (OSError, ValueError) as exc:  # nothing was forked: the cold command line
                    why = f"{type(exc).__name__}: {exc}"
                    log.write(f"[aicloud: started without the warm template: {why}]\n".encode())
                else:
                    self.workers.append(Worker(rank, None, prefixed=False, forked=forked))
                    continue
            try:
                proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                    close_fds=True,
                    env=worker_env(base, rank, self.n_workers, self.gpus),
                )
            except OSError as exc:
                log.write(f"[aicloud: could not start {self.argv[0]!r}: {exc}]\n".encode())
                self._killpg(signal.SIGKILL)
                for worker in self.workers:
                    worker.reap()
                return 126 if isinstance(exc, PermissionError) else 127
            self.workers.append(Worker(rank, proc, prefixed=self.n_workers > 1))
        first = self.workers[0]
        workers = [{"rank": w.rank, "pid": w.pid, "pgid": w.pid} for w in self.workers]
        write_json_atomic(self.path(CHILD_NAME), {"pid": first.pid, "pgid": first.pid, "workers": workers})
        return None

    def _run_workers(self, log: CappedLog) -> int:
        failed_to_start = self._start(log)
        if failed_to_start is not None:
            return failed_to_start
        if self.cancel_at is not None:  # cancelled while starting
            self._killpg(signal.SIGTERM)
        by_fd = {w.fd: w for w in self.workers}
        while True:
            open_fds = [w.fd for w in self.workers if not w.eof]
            if not open_fds:
                time.sleep(0.1)
            else:
                for ready in select.select(open_fds, [], [], 0.1)[0]:
                    worker = by_fd[ready]
                    data = os.read(ready, CHUNK)
                    if data:
                        log.write(worker.lines(data))
                    else:
                        worker.eof = True
                        log.write(worker.rest())
            now = time.monotonic()
            for worker in self.workers:
                if worker.exited_at is not None:
                    continue
                code = worker.exited()
                if code is None:
                    continue
                code = procgroup.exit_code(code, sandboxed=self.sandboxed)
                worker.exited_at, worker.exit_code = now, code
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.pid, signal.SIGKILL)  # whatever it left behind in its group
                if code != 0 and self.failed is None:
                    self.failed = worker
                    if any(w.exited_at is None for w in self.workers):  # stop the others
                        self._killpg(signal.SIGTERM)
                        deadline = now + self.default_grace_s
                        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)
            if self.kill_at is not None and now >= self.kill_at and not self.killed:
                self.killed = True
                self._killpg(signal.SIGKILL)
            if all(
                w.exited_at is not None and (w.eof or now - w.exited_at > DRAIN_AFTER_EXIT_S)
                for w in self.workers
            ):
                break
        for worker in self.workers:
            if not worker.eof:
                log.write(worker.rest())
        codes = [procgroup.exit_code(w.reap(), sandboxed=self.sandboxed) for w in self.workers]
        if self.failed is not None:
            return codes[self.failed.rank]
        return next((c for c in codes if c != 0), 0)


def _daemonize() -> None:
    """Fork; the parent prints the child's pid and start time and exits; the child goes on."""
    pid = os.fork()
    if pid > 0:
        sys.stdout.write(json.dumps({"pid": pid, "start_time": procgroup.proc_start_time(pid)}))
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.close(devnull)


USAGE = (
    "usage: supervise.py JOB_DIR MAX_LOG_BYTES GRACE_S [--workers N] [--gpus G] [--sandboxed 0|1] "
    "[--template JSON] -- ARGV...\n"
)


def main(args: list[str]) -> int:
    """Entry point: ``JOB_DIR MAX_LOG_BYTES GRACE_S [--workers N] [--gpus G] [--sandboxed B] -- ARGV``."""
    if "--" not in args:
        sys.stderr.write(USAGE)
        return 2
    split = args.index("--")
    head, argv = args[:split], args[split + 1 :]
    options = {"--workers": 1, "--gpus": 0, "--sandboxed": 0}
    template = None
    try:
        positional, rest = head[:3], head[3:]
        while rest:
            if rest[0] == "--template":  # a JSON object: see template_launch.fork
                template, rest = json.loads(rest[1]), rest[2:]
                continue
            name, value, rest = rest[0], int(rest[1]), rest[2:]
            if name not in options or value < 0:
                raise ValueError(name)
            options[name] = value
        job_dir, max_log, grace = positional[0], int(positional[1]), float(positional[2])
    except (IndexError, ValueError):
        sys.stderr.write(USAGE)
        return 2
    if not argv or options["--workers"] < 1:
        sys.stderr.write(USAGE)
        return 2
    supervisor = Supervisor(
        job_dir,
        max_log,
        grace,
        argv,
        options["--workers"],
        options["--gpus"],
        options["--sandboxed"] > 0,
        template if isinstance(template, dict) and options["--workers"] == 1 else None,
    )
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # before the fork: no unguarded moment
        signal.signal(sig, supervisor.on_signal)
    _daemonize()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
