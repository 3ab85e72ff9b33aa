"""The supervisor's side of a replica forked from a warm template (standard library only).

The job supervisor (:mod:`aicloud.executors.supervise`, ``--template OPTIONS_JSON``) loads this file
and, instead of starting the replica's cold command line, asks the template for a fork
(:func:`fork`): it connects to the template's socket (``OPTIONS_JSON``: ``socket``, ``root``, ``uid``,
``rlimits``, ``threads``, ``argv``, ``confine``), sends the launch request (its own environment and
folder, which are the replica's) with the write end of the replica's log pipe, and gets back the pid
of the template's child (the replica's monitor; protocol: :mod:`aicloud.serving.template`). The
supervisor then watches that :class:`Forked` as it watches a process of its own:

* signals go to the monitor's process group (the monitor and the replica's init ignore SIGTERM, the
  replica drains; SIGKILL ends them all), as they go to a cold replica's;
* the exit code comes over the connection when the replica has ended (negative: killed by that
  signal; the connection closing without one: as if killed by SIGKILL);
* the supervisor gone (its end of the connection closed), the monitor kills the replica.

When the template is not there, refuses (it has more than one thread) or its child fails before
anything of the replica ran, :func:`fork` raises and the supervisor starts the cold command line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
from typing import Any

CONNECT_TIMEOUT_S = 5.0
#: How long the template's child may take to answer its pid (it reads the request, forks).
ANSWER_TIMEOUT_S = 30.0
CREDENTIALS = struct.Struct("3i")


class Forked:
    """A replica forked from the template, as the supervisor sees it: the monitor's ``pid`` (its
    process group), the read end ``fd`` of the log pipe, and its exit."""

    def __init__(self, conn: socket.socket, pid: int, fd: int, buffered: bytearray) -> None:
        self.conn = conn
        self.pid = pid
        self.fd = fd
        self._buffered = buffered
        self.code: int | None = None

    def exited(self, block: bool = False) -> int | None:
        """The exit code once the replica has ended (negative: by that signal); None while it runs
        (``block``: wait for it)."""
        if self.code is not None:
            return self.code
        self.conn.setblocking(block)
        try:
            while self.code is None:
                doc, _ = _line(self.conn, self._buffered)
                if doc is None:  # the monitor died without a word: as if killed
                    self.code = -signal.SIGKILL
                elif "exit_code" in doc:
                    self.code = int(doc["exit_code"])
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ValueError):
            self.code = -signal.SIGKILL
        return self.code

    def wait(self) -> int:
        """Wait for the exit code; closes the connection and the log pipe's end."""
        code = self.exited(block=True)
        self.conn.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        return -signal.SIGKILL if code is None else code


def _line(conn: socket.socket, buffered: bytearray) -> tuple[dict[str, Any] | None, int | None]:
    """The next JSON line from the template's child and the pid of its sender, in this process's PID
    namespace (None: the connection ended)."""
    pid = None
    while b"\n" not in buffered:
        data, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and pid is None:
                pid = CREDENTIALS.unpack(payload[: CREDENTIALS.size])[0]
        if not data:
            return None, pid
        buffered += data
    line, _, rest = bytes(buffered).partition(b"\n")
    buffered[:] = rest
    doc = json.loads(line)
    return (doc if isinstance(doc, dict) else {}), pid


def fork(options: dict[str, Any], env: dict[str, str], cwd: str) -> Forked:
    """Ask the template for the replica; OSError or ValueError (saying why) when nothing was forked."""
    request: dict[str, Any] = {
        "module": "aicloud.serving.replica",
        "argv": options.get("argv") or [],
        "env": dict(env),
        "cwd": cwd,
        "uid": options.get("uid"),
        "rlimits": options.get("rlimits") or {},
        "threads": options.get("threads") or 1,
        "root": options["root"],
    }
    if options.get("confine"):  # as bubblewrap's --setenv for a cold replica
        request["env"].update(HOME=cwd, TMPDIR="/tmp")
    body = json.dumps(request).encode()
    del request
    read_end, write_end = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_TIMEOUT_S)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        conn.connect(options["socket"])
        conn.sendall(b"L")  # alone: the template reads this byte, its child the request and the fd
        fds = struct.pack("i", write_end)
        buffered = bytearray()
        try:
            conn.sendmsg([struct.pack("!I", len(body)), body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except (BrokenPipeError, ConnectionResetError):
            # the template refused at once and closed: its answer says why, when it got out first
            refusal, _ = _line(conn, buffered)
            if refusal and refusal.get("error"):
                raise ValueError(str(refusal["error"])) from None
            raise
        os.close(write_end)
        write_end = -1
        conn.settimeout(ANSWER_TIMEOUT_S)
        answer, pid = _line(conn, buffered)
        if answer is None or "pid" not in answer or not pid:
            raise ValueError(str((answer or {}).get("error") or "the template did not answer"))
    except BaseException:
        conn.close()
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        raise
    conn.settimeout(None)
    return Forked(conn, pid, read_end, buffered)
