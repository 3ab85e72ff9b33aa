"""The job supervisor: a tiny process that owns one job's process, its log and its exit record.

The local executor never holds a job's stdout pipe itself (a pipe read by a control-plane
thread would break when the control plane restarts, and SIGPIPE would kill the job).
Instead it starts this file, which daemonizes and supervises the job:

1. ``python -I supervise.py JOB_DIR MAX_LOG_BYTES GRACE_S -- ARGV...`` (cwd and environment
   are the job's). The process forks: the parent prints ``{"pid", "start_time"}`` of the
   child as JSON on stdout and exits at once; the child is the supervisor. It calls
   ``setsid`` (its own session and process group, no controlling terminal) and is
   re-parented to init, so it outlives the control plane and is nobody's zombie.
2. It starts ``ARGV`` in a new process group of its own (stdin ``/dev/null``, stdout and
   stderr into one pipe), and records ``{"pid", "pgid"}`` in ``JOB_DIR/child.json``.
3. It copies the pipe to ``JOB_DIR/job.log`` in 64 KiB reads, keeping at most
   ``MAX_LOG_BYTES``; past the cap it keeps reading (the job never blocks) but drops the
   bytes, and ends the log with one marker line
   ``[aicloud: log truncated at N bytes; M more bytes dropped]``.
4. SIGTERM (or SIGINT, SIGHUP) asks for cancellation: the supervisor forwards SIGTERM to the
   job's process group and SIGKILLs the group ``grace_s`` seconds later (``grace_s`` from
   ``JOB_DIR/cancel.json`` when the control plane wrote one, else ``GRACE_S``).
5. When the job's main process exits, whatever it left in its process group is killed
   (like systemd's ``KillMode=control-group``), the pipe is drained (2 s at most: a
   descendant that escaped the group may hold it open), and the supervisor writes
   ``JOB_DIR/exit.json`` atomically (temp file + rename) as its last act: ``exit_code``
   (negative = killed by that signal), ``cpu_seconds`` and ``peak_rss_bytes`` (from
   ``getrusage(RUSAGE_CHILDREN)``), ``wall_seconds``, ``cancelled``, ``log_bytes``,
   ``log_dropped``, ``finished_at``.

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
from typing import Any

CHUNK = 64 * 1024
DRAIN_AFTER_EXIT_S = 2.0
LOG_NAME = "job.log"
EXIT_NAME = "exit.json"
CHILD_NAME = "child.json"
CANCEL_NAME = "cancel.json"


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19])


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


class CappedLog:
    """Appends to a log file up to ``cap`` bytes, then counts (and drops) the rest."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.written = 0
        self.dropped = 0
        self._last = b"\n"

    def _marker(self) -> bytes:
        lead = b"" if self._last == b"\n" else b"\n"
        text = f"[aicloud: log truncated at {self.cap} bytes; {self.dropped} more bytes dropped]\n"
        return lead + text.encode()

    def write(self, data: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            keep = memoryview(data)[:room]
            while keep:
                n = os.write(self.fd, keep)
                keep = keep[n:]
            kept = min(room, len(data))
            self.written += kept
            self._last = data[kept - 1 : kept] if kept else self._last
            data = data[kept:]
        if data:
            first = self.dropped == 0
            self.dropped += len(data)
            if first:  # readers of a live log see the truncation at once
                os.write(self.fd, self._marker())

    def finish(self) -> None:
        """Rewrite the marker with the final dropped count."""
        if self.dropped:
            os.lseek(self.fd, self.written, os.SEEK_SET)
            marker = self._marker()
            os.write(self.fd, marker)
            os.ftruncate(self.fd, self.written + len(marker))


class Supervisor:
    """Runs one job to its end; see the module docstring."""

    def __init__(self, job_dir: str, max_log_bytes: int, grace_s: float, argv: list[str]) -> None:
        self.job_dir = job_dir
        self.max_log_bytes = max_log_bytes
        self.default_grace_s = grace_s
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.cancel_at: float | None = None  # monotonic time SIGTERM arrived
        self.kill_at: float | None = None
        self.killed = False

    def path(self, name: str) -> str:
        return os.path.join(self.job_dir, name)

    def _grace(self) -> float:
        try:
            with open(self.path(CANCEL_NAME), "rb") as f:
                return float(json.load(f)["grace_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.default_grace_s

    def _killpg(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.cancel_at is None:
            self.cancel_at = time.monotonic()
            self.kill_at = self.cancel_at + self._grace()
        self._killpg(signal.SIGTERM)

    def _exited(self) -> bool:
        """Whether the main process has exited, without reaping it (its pid stays reserved)."""
        assert self.proc is not None
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _abort(self) -> int:
        if self.proc is None:
            return 127
        self._killpg(signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.wait()

    def run(self) -> int:
        """Start the job, copy its output to the log until it ends, write ``exit.json``."""
        started = time.monotonic()
        fd = os.open(self.path(LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        log = CappedLog(fd, self.max_log_bytes)
        try:
            exit_code = self._run_child(log)
        except BaseException as exc:  # record why, and stop the job: nobody watches it any more
            log.write(f"[aicloud: supervisor error: {type(exc).__name__}: {exc}]\n".encode())
            exit_code = self._abort()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        log.finish()
        os.close(fd)
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        write_json_atomic(
            self.path(EXIT_NAME),
            {
                "exit_code": exit_code,
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                "peak_rss_bytes": usage.ru_maxrss * scale,
                "wall_seconds": round(time.monotonic() - started, 3),
                "cancelled": self.cancel_at is not None,
                "log_bytes": log.written,
                "log_dropped": log.dropped,
                "finished_at": time.time(),
            },
        )
        return 0

    def _run_child(self, log: CappedLog) -> int:
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
                close_fds=True,
            )
        except OSError as exc:
            log.write(f"[aicloud: could not start {self.argv[0]!r}: {exc}]\n".encode())
            return 126 if isinstance(exc, PermissionError) else 127
        write_json_atomic(self.path(CHILD_NAME), {"pid": self.proc.pid, "pgid": self.proc.pid})
        if self.cancel_at is not None:  # cancelled while starting
            self._killpg(signal.SIGTERM)
        assert self.proc.stdout is not None
        pipe = self.proc.stdout.fileno()
        eof = False
        exited_at: float | None = None
        while True:
            if eof:
                time.sleep(0.1)
            elif select.select([pipe], [], [], 0.1)[0]:
                data = os.read(pipe, CHUNK)
                if data:
                    log.write(data)
                else:
                    eof = True
            now = time.monotonic()
            if exited_at is None and self._exited():
                exited_at = now
                self._killpg(signal.SIGKILL)  # whatever the job left behind in its group
            if self.kill_at is not None and now >= self.kill_at and not self.killed:
                self.killed = True
                self._killpg(signal.SIGKILL)
            if exited_at is not None and (eof or now - exited_at > DRAIN_AFTER_EXIT_S):
                break
        self.proc.stdout.close()
        return self.proc.wait()


def _daemonize() -> None:
    """Fork; the parent prints the child's pid and start time and exits; the child goes on."""
    pid = os.fork()
    if pid > 0:
        sys.stdout.write(json.dumps({"pid": pid, "start_time": proc_start_time(pid)}))
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.close(devnull)


def main(args: list[str]) -> int:
    """Entry point: ``JOB_DIR MAX_LOG_BYTES GRACE_S -- ARGV...``."""
    if len(args) < 5 or args[3] != "--":
        sys.stderr.write("usage: supervise.py JOB_DIR MAX_LOG_BYTES GRACE_S -- ARGV...\n")
        return 2
    supervisor = Supervisor(args[0], int(args[1]), float(args[2]), args[4:])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # before the fork: no unguarded moment
        signal.signal(sig, supervisor.on_signal)
    _daemonize()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
