"""Start a replica from a warm template, or the cold way when it cannot (standard library only).

``python -I -S template_launch.py OPTIONS_JSON -- COLD_ARGV...`` runs as the replica's worker under the
job supervisor (:mod:`aicloud.executors.supervise`): its stdout is the replica's log pipe, its
environment and folder are the replica's. It connects to the template's socket (``OPTIONS_JSON``:
``socket``, ``uid``, ``rlimits``, ``threads``, ``root``, ``confine``), sends the launch request with its
stdout (protocol: :mod:`aicloud.serving.template`), and stands for the replica until it ends:

* it forwards SIGTERM, SIGINT and SIGHUP to the replica's process group (the template's child answers
  its pid; its monitor and init ignore them, the replica drains), so the supervisor's graceful stop
  and its SIGKILL after the grace work as for a cold replica: this process killed, the template's child
  SIGKILLs the replica;
* it exits with the replica's exit code, or by the replica's signal (so the supervisor records ``-N``).

When the template is not there, refuses (it has more than one thread) or its child fails before
anything of the replica ran, it ``exec``s ``COLD_ARGV`` (the sandboxed cold command line) in its own
place, and the supervisor watches that instead: a replica always starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CONNECT_TIMEOUT_S = 5.0
#: How long the template's child may take to answer its pid (it reads the request, forks).
ANSWER_TIMEOUT_S = 30.0


def cold(argv: list[str], why: str) -> None:
    """Run the cold command line in this process's place."""
    sys.stdout.write(f"[aicloud: started without the warm template: {why}]\n")
    sys.stdout.flush()
    for sig in (*STOP_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess's restore_signals
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stdout.write(f"[aicloud: could not start {argv[0]!r}: {exc}]\n")
        sys.stdout.flush()
        os._exit(126 if isinstance(exc, PermissionError) else 127)


def _lines(conn: socket.socket, buffered: bytearray) -> tuple[dict[str, Any] | None, int | None]:
    """The next JSON line from the template's child and the pid of its sender (None: the connection
    ended)."""
    pid = None
    while b"\n" not in buffered:
        data, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and pid is None:
                pid = struct.unpack("3i", payload[: struct.calcsize("3i")])[0]
        if not data:
            return None, pid
        buffered += data
    line, _, rest = bytes(buffered).partition(b"\n")
    buffered[:] = rest
    doc = json.loads(line)
    return (doc if isinstance(doc, dict) else {}), pid


def main(args: list[str]) -> int:
    if "--" not in args or args.index("--") != 1:
        sys.stderr.write("usage: template_launch.py OPTIONS_JSON -- COLD_ARGV...\n")
        return 2
    options, cold_argv = json.loads(args[0]), args[2:]
    pending: list[int] = []
    target: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if target:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(target[0], signum)
        else:
            pending.append(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    request: dict[str, Any] = {
        "module": "aicloud.serving.replica",
        "argv": options.get("argv") or [],
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "uid": options.get("uid"),
        "rlimits": options.get("rlimits") or {},
        "threads": options.get("threads") or 1,
        "root": options["root"],
    }
    if options.get("confine"):  # as bubblewrap's --setenv for a cold replica
        request["env"].update(HOME=request["cwd"], TMPDIR="/tmp")
    body = json.dumps(request).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_TIMEOUT_S)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        conn.connect(options["socket"])
        conn.sendall(b"L")  # alone: the template reads this byte, its child the request and the fd
        conn.sendmsg(
            [struct.pack("!I", len(body)), body],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", 1))],
        )
        del body, request
        conn.settimeout(ANSWER_TIMEOUT_S)
        buffered = bytearray()
        answer, pid = _lines(conn, buffered)
    except (OSError, ValueError) as exc:
        conn.close()
        cold(cold_argv, f"{type(exc).__name__}: {exc}")
        return 127
    if answer is None or "pid" not in answer or not pid:
        conn.close()
        cold(cold_argv, str((answer or {}).get("error") or "the template did not answer"))
        return 127
    target.append(pid)
    for signum in pending:
        forward(signum, None)
    conn.settimeout(None)
    while True:
        try:
            doc, _ = _lines(conn, buffered)
        except InterruptedError:
            continue
        except (OSError, ValueError):
            doc = None
        if doc is None:  # the template's child died without a word: as if killed
            os.kill(os.getpid(), signal.SIGKILL)
            return 128 + signal.SIGKILL
        if "exit_code" in doc:
            code = int(doc["exit_code"])
            if code < 0:  # die of the same signal, so the supervisor records -N as for a cold one
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
                return 128 - code
            return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
