"""PID 1 of a workload sandbox: starts the workload and reaps every process of the sandbox.

``python -I -S sandbox_init.py ARGV...`` runs as bubblewrap's ``--as-pid-1`` (see
:mod:`aicloud.executors.sandbox`). It forks ``ARGV`` (which drops to the workload's uid when
the control plane is root), reaps whatever the workload leaves to it until the workload's
main process has exited, then exits with the workload's code (``128 + N`` for a death by
signal N). Its exit ends the PID namespace, so nothing the workload started outlives it.

Why not bubblewrap's own init: it exits without waiting in a way that passes the sandbox's
CPU time and peak memory on, so the supervisor's ``wait4`` (the job's usage and cost) would
see none of it. This one waits for every child, so their usage accumulates up to the
supervisor. It ignores SIGTERM, SIGINT and SIGHUP: a graceful stop goes to the workload's
processes themselves (``procgroup.signal_group``).

With ``--reap-all`` (a warm template's sandbox) it exits only when no process is left: the replicas
forked from the template outlive it, and the namespace ends with its init.

Only the standard library, and ``-S``: it starts in milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> int:
    reap_all = argv[:1] == ["--reap-all"]
    argv = argv[1:] if reap_all else argv
    if not argv:
        sys.stderr.write("usage: sandbox_init.py [--reap-all] ARGV...\n")
        return 2
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            sys.stderr.write(f"[aicloud: could not start {argv[0]!r}: {exc}]\n")
            sys.stderr.flush()
            os._exit(126 if isinstance(exc, PermissionError) else 127)
    code: int | None = None
    while True:
        try:
            reaped, status = os.wait()
        except ChildProcessError:
            return 127 if code is None else code
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            if not reap_all:
                return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
