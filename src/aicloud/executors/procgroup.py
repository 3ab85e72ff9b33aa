"""A process group as the job supervisor sees it, from ``/proc`` by hand (the supervisor imports only the
standard library, no psutil): a process's start time (what tells a pid from its reuse), the graceful
signal of a sandboxed group, and a sandboxed workload's exit code.

:mod:`aicloud.executors.supervise` loads this file by path (it runs with ``-I``); the Ray worker
(:mod:`aicloud.executors.ray_worker`) imports it.
"""

from __future__ import annotations

import contextlib
import os
import signal


def proc_stat(pid: int | str) -> tuple[bytes, list[bytes]] | None:
    """``/proc/<pid>/stat`` of a process, by hand (this file imports only the standard library, no
    psutil): its command name and the fields after it (field 3, the state, first); None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    end = stat.rfind(b")")
    return stat[stat.find(b"(") + 1 : end], stat[end + 2 :].split()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot); None if unknown."""
    stat = proc_stat(pid)
    return None if stat is None else int(stat[1][19])


def _group_members(pgid: int) -> list[tuple[int, bytes]]:
    """(pid, command name) of every process in process group ``pgid``, from ``/proc``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isascii() or not entry.isdigit():
            continue
        stat = proc_stat(entry)
        if stat is not None and int(stat[1][2]) == pgid:
            members.append((int(entry), stat[0]))
    return members


def signal_group(pgid: int, sig: int, *, sandboxed: bool) -> None:
    """Send ``sig`` to process group ``pgid``.

    A sandboxed group's SIGTERM (or any signal but SIGKILL) goes to every process but
    bubblewrap's own, so the workload can stop gracefully: the bubblewrap monitor dies of it
    (and kills the sandbox at once), while its init ignores it."""
    if pgid <= 1:
        return
    if not sandboxed or sig == signal.SIGKILL or not os.path.isdir("/proc/self"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        return
    for pid, name in _group_members(pgid):
        if name != b"bwrap":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def exit_code(code: int, *, sandboxed: bool) -> int:
    """A sandboxed workload's exit code as the unsandboxed one would read: bubblewrap reports a
    death by signal N as ``128 + N``; that becomes ``-N``."""
    if sandboxed and 128 < code < 128 + 65:
        return -(code - 128)
    return code
