"""The warm template: ``python -m aicloud.serving.template --socket PATH --flavour F [--confine]``.

A long-lived process that has already imported what a replica imports, and forks a replica per
launch request, so a replica from zero skips the interpreter's start and its imports (docs/serving.md,
"Warm templates"). The local executor starts one per flavour and Python environment
(:mod:`aicloud.executors.templates`), inside the workload sandbox, and ends it when the control plane
ends (its stdin is a pipe the control plane holds: end of file and it exits).

Flavours: ``serving`` imports the serving stack (FastAPI, uvicorn, the replica app, numpy, the SDK's
HTTP client, safetensors for numpy); ``serving-torch`` imports torch and the built-in models' loader
too. A replica that needs no torch is forked from ``serving`` and never maps it.

**Single-threaded until each fork.** A fork copies only the calling thread: a lock another thread
held stays locked for ever in the child. The thread variables are 1 before anything imports (numpy's
OpenBLAS would start its pool, Arrow's jemalloc a background thread), ONNX Runtime is left to the child
(it starts a thread when imported), and before each fork ``/proc/self/task`` must hold one thread; if it
does not, the template refuses and the replica starts the cold way.

**No secret in the template.** It accepts a connection and forks at once; the child reads the launch
request (environment with the replica's token, key and secrets; its log fd), never the template. A
connection from another uid than the template's own is refused (``SO_PEERCRED``); the socket lies in a
folder (0700) of the control plane's user, which the replicas do not see.

The protocol, one connection per replica (the other end: :mod:`aicloud.executors.template_launch`):

1. the replica's supervisor connects (with ``SO_PASSCRED``) and sends ``L``, then, in a message of
   its own, a 4-byte big-endian length and that many bytes of JSON ``{"module", "argv", "env", "cwd",
   "uid", "rlimits", "threads", "root"}`` with the write end of the replica's log pipe as
   ``SCM_RIGHTS``. (``P`` instead is the executor's ping: the template answers ``ok``.)
2. the template refuses (``{"error": "..."}`` and closes) or forks; the child (see
   :mod:`aicloud.serving.template_child`) answers ``{"pid": N}`` (the kernel attaches its credentials,
   so the supervisor learns its pid in its own PID namespace), confines itself and runs the replica;
3. when the replica has exited the child sends ``{"exit_code": N}`` (negative: killed by signal -N).
   Lines of JSON, each ending in ``\\n``. The supervisor's end closing (it was killed) kills the replica.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import selectors
import signal
import socket
import struct
import sys
import time

FLAVOURS = ("serving", "serving-torch")
#: What every flavour imports before it listens (the modules a replica's start imports).
SERVING_MODULES = (
    "numpy",
    "psutil",
    "httpx",
    "uvloop",
    "httptools",
    "uvicorn",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.lifespan.on",
    "pydantic.v1",  # FastAPI imports it when the first route is added (0.1 s)
    "safetensors.numpy",
    "aicloud.client",
    "aicloud.serving.replica",
    "aicloud.serving.app",
    "aicloud.serving.runtime",
    "aicloud.serving.channel",
    "aicloud.serving.numpy_mlp",
    "aicloud.serving.service",
    "aicloud.artifacts.archive",
)
TORCH_MODULES = (
    "torch",
    "safetensors.torch",
    "pandas",
    "aicloud.artifacts.loader",
    "aicloud.serving.runtimes",
)
#: Set before anything imports: one thread everywhere until the fork (the child sets its own).
IMPORT_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",  # pyarrow (pandas) starts no jemalloc thread
}
HEADER = struct.Struct("!I")
LAUNCH, PING = b"L", b"P"
OPCODE_TIMEOUT_S = 2.0


def log(message: str) -> None:
    print(f"[aicloud template] {message}", flush=True)


def threads() -> int:
    """How many threads this process has now."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc (macOS): threading's view, which misses threads native code started
        import threading

        return threading.active_count()


def preimport(flavour: str) -> float:
    """Import what a replica of ``flavour`` needs; the seconds it took."""
    import importlib

    for name, value in IMPORT_ENV.items():
        os.environ[name] = value
    started = time.perf_counter()
    for name in SERVING_MODULES + (TORCH_MODULES if flavour == "serving-torch" else ()):
        importlib.import_module(name)
    from aicloud.client.http import tls_context

    tls_context()  # the CA bundle, loaded once for every replica
    if flavour == "serving-torch":
        _warm_torch()
    return time.perf_counter() - started


def _warm_torch() -> None:
    """Run one small convolution and linear layer: torch's first call of an operator does lazy set-up
    (dispatch tables, the CPU kernels' choice) that every replica would pay again. One thread
    (``OMP_NUM_THREADS=1``): it starts none."""
    import torch

    with torch.inference_mode():
        conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        x = torch.nn.functional.relu(conv(torch.zeros(2, 1, 8, 8))).flatten(1)
        torch.nn.Linear(x.shape[1], 3)(x).softmax(-1)


def _reap(signum: int, frame: object) -> None:
    """SIGCHLD: reap the forked children (each a replica's monitor) that have ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _refuse(conn: socket.socket, why: str) -> None:
    log(f"refused a launch: {why}")
    import json

    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"error": why}).encode() + b"\n")
    conn.close()


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def serve(listener: socket.socket, flavour: str, confine: bool) -> int:
    """Accept launches until stdin (the control plane's pipe) ends; 0 then."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "lifeline")
    while True:
        for key, _ in sel.select():
            if key.data == "lifeline":
                if not os.read(sys.stdin.fileno(), 4096):
                    log("the control plane has gone: exiting (running replicas go on)")
                    return 0
                continue
            try:
                conn, _ = listener.accept()
                if _peer_uid(conn) != os.geteuid():
                    _refuse(conn, "not the control plane's user")
                    continue
                conn.settimeout(OPCODE_TIMEOUT_S)
                opcode = conn.recv(1)  # a byte of its own: the request (and its fds) stay for the child
                conn.settimeout(None)
            except OSError:
                continue
            if opcode == PING:
                with contextlib.suppress(OSError):
                    conn.sendall(b"ok\n")
                conn.close()
                continue
            if opcode != LAUNCH:
                conn.close()
                continue
            if (n := threads()) != 1:
                _refuse(conn, f"{n} threads: a fork would copy one of them only")
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                from aicloud.serving.template_child import launched

                sel.close()
                listener.close()
                os._exit(launched(conn, flavour, confine))
            conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aicloud.serving.template", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on (made here)")
    parser.add_argument("--flavour", choices=FLAVOURS, default="serving")
    parser.add_argument("--confine", action="store_true", help="each replica in namespaces of its own")
    args = parser.parse_args(argv)
    took = preimport(args.flavour)
    # What the imports made is never collected: out of the collector's sight, a child's collections
    # do not touch (and so copy) the pages the template shares with it.
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, _reap)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(args.socket)
    finally:
        os.umask(old)
    listener.listen(64)
    log(f"{args.flavour}: imports {took:.2f}s, {threads()} thread(s), listening on {args.socket}")
    return serve(listener, args.flavour, args.confine)


if __name__ == "__main__":
    sys.exit(main())
