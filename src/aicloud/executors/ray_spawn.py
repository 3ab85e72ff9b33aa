"""Start one Ray worker's workload and report what it used.

``python -I -S ray_spawn.py USAGE_FILE PARENT_PID -- ARGV...`` is what a
:class:`~aicloud.executors.ray_worker.JobWorker` actor starts, in a process group of its own.
It forks ``ARGV`` and waits for it, for two reasons:

* **honest usage.** A process forked from the actor (a Ray worker of a few hundred MB)
  inherits its high-water RSS, so ``wait4`` would report the actor's memory as the job's.
  Forked from this small process instead, the workload's peak RSS is its own; this process
  writes ``{"cpu_seconds", "peak_rss_bytes"}`` of it to ``USAGE_FILE`` when it ends.
* **no orphans.** On Linux both this process and the workload get ``PR_SET_PDEATHSIG`` =
  SIGKILL: if the actor dies (killed by Ray, or its node goes), the workload dies too.

It ignores SIGTERM/SIGINT/SIGHUP (a cancel's SIGTERM to the group reaches the workload,
and this process goes on waiting for it) and ends with the workload's status: the same exit
code, or killed by the same signal. ``ARGV`` that cannot start exits 127 (126: not
executable) after one ``[aicloud: could not start ...]`` line, as on the local executor.
Standard library only; isolated mode, no ``site``: it starts in milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when the thread that forked it ends (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def run(usage_path: str, parent: int, argv: list[str]) -> int:
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 137
    pid = os.fork()
    if pid == 0:
        die_with_parent()
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            sys.stderr.write(f"[aicloud: could not start {argv[0]!r}: {exc}]\n")
            sys.stderr.flush()
            os._exit(126 if isinstance(exc, PermissionError) else 127)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _, status, usage = os.wait4(pid, 0)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    record = {
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_bytes": usage.ru_maxrss * scale,
    }
    tmp = f"{usage_path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, usage_path)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # end the same way: killed by that signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def main(args: list[str]) -> int:
    if len(args) < 4 or args[2] != "--":
        sys.stderr.write("usage: ray_spawn.py USAGE_FILE PARENT_PID -- ARGV...\n")
        return 2
    return run(args[0], int(args[1]), args[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
