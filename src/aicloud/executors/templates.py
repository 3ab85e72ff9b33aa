"""The warm templates of the local executor: the processes that replicas are forked from
(:mod:`aicloud.serving.template`; docs/serving.md, "Warm templates").

One template per flavour (``serving``, ``serving-torch``) and Python environment, started on the first
launch that names its flavour (that launch starts the cold way) and kept while the control plane runs:
its stdin is a pipe this process holds, so it ends with the control plane, however that ends. Its
replicas do not: they are not its children in any way the kernel would end (each is its own session,
the template's sandbox waits for every process), and each is supervised like a cold replica.

Layout: the folder :func:`template_root` (``aicloud-warm-<digest>`` in the system temp folder, 0700,
the control plane's) holds the templates' sockets and the working folders of the replicas started
from them, since a template's sandbox can show a replica only folders it had when it started; each
replica covers that folder with an empty one and binds back its own (:mod:`aicloud.serving.template_child`).
The templates' logs are ``<jobs_dir>/.templates/<flavour>.log``.

A launch is warm only when it can be: a replica with one worker and no GPU, whose environment sets no
variable that acts when an interpreter starts (``PYTHON*``, ``LD_*``, ``MALLOC_*``) to another value
than the template's (which has the control plane's, and ``PYTHONUNBUFFERED=1``); with the sandbox,
when the control plane is root (the template needs root's capabilities to give each replica namespaces
and a uid of its own). Otherwise, and whenever the template is missing or refuses, it starts cold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO

from aicloud.executors.base import LaunchRequest
from aicloud.executors.sandbox import Sandbox

__all__ = ["FLAVOURS", "Templates", "template_root"]

log = logging.getLogger(__name__)

FLAVOURS = ("serving", "serving-torch")
MAX_LOG_BYTES = 1024 * 1024
PING_TIMEOUT_S = 2.0
#: A flavour whose template ended this many times before it answered is not started again.
MAX_FAILED_STARTS = 3
#: Environment variables that act only when an interpreter or the C library starts, or that the template
#: reads before it forks (``SSL_CERT_*``: the TLS context): a replica whose environment sets one to
#: another value than the template's starts cold, where they take effect.
START_VARIABLES = ("PYTHON", "LD_", "MALLOC_", "SSL_CERT_")


def template_root(jobs_dir: Path, python: str) -> Path:
    """The folder of the templates of the executor of ``jobs_dir`` running ``python``."""
    digest = hashlib.sha256(f"{Path(jobs_dir).resolve()}\0{python}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"aicloud-warm-{digest}"


def _answers(path: str) -> bool:
    """Whether the template on ``path`` answers its ping (it does not fork for one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(PING_TIMEOUT_S)
        try:
            conn.connect(path)
            conn.sendall(b"P")
            return conn.recv(8) == b"ok\n"
        except OSError:
            return False


class Templates:
    """The executor's templates; see the module docstring. Thread-safe."""

    def __init__(self, jobs_dir: Path, python: str, sandbox: Sandbox | None) -> None:
        self.python = python
        self.sandbox = sandbox
        self.root = template_root(jobs_dir, python)
        self.log_dir = Path(jobs_dir) / ".templates"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._retired: list[subprocess.Popen[bytes]] = []  # ended templates whose sandbox still runs
        self._answered: set[int] = set()  # the templates that answered once (pids of their sandbox)
        self._failed: dict[str, int] = {}  # by flavour: templates that ended before they answered
        #: The templates' environment: the variables that act when an interpreter starts are this
        #: process's (what a replica's environment inherits), output unbuffered as a replica's is.
        self.env = {k: v for k, v in os.environ.items() if k.startswith(START_VARIABLES)}
        self.env.update(
            PATH=os.environ.get("PATH", os.defpath),
            LANG=os.environ.get("LANG", "C.UTF-8"),
            PYTHONUNBUFFERED="1",
        )

    def socket_path(self, flavour: str) -> str:
        return str(self.root / f"{flavour}.sock")

    def usable(self, req: LaunchRequest) -> bool:
        """Whether ``req`` may start from a template (see the module docstring)."""
        return (
            req.template in FLAVOURS
            and req.argv[:1] == [self.python]
            and req.workers == 1
            and req.gpus == 0
            and req.cwd is None
            and (self.sandbox is None or self.sandbox.as_root)
            and not any(
                name.startswith(START_VARIABLES) and value != self.env.get(name)
                for name, value in req.env.items()
            )
        )

    def ready(self, flavour: str) -> str | None:
        """The socket of ``flavour``'s template when it listens; None while it starts (this call starts
        it when none runs, or after it ended)."""
        path = self.socket_path(flavour)
        with self._lock:
            self._retired = [p for p in self._retired if p.poll() is None]
            proc = self._procs.get(flavour)
            if proc is not None and proc.poll() is None:
                if not os.path.exists(path):
                    return None  # still importing
                if _answers(path):
                    self._answered.add(proc.pid)
                    return path
                # its sandbox may hold running replicas: left to end with them (it does not kill them)
                self._retired.append(proc)
            if proc is not None:
                if proc.pid not in self._answered:
                    self._failed[flavour] = self._failed.get(flavour, 0) + 1
                log.warning("the warm template %s has ended (its log: %s)", flavour, self.log_dir)
            if self._failed.get(flavour, 0) >= MAX_FAILED_STARTS:
                if self._procs.pop(flavour, None) is not None:
                    log.warning(
                        "replicas of %s start cold: its template failed to start %d times",
                        flavour,
                        MAX_FAILED_STARTS,
                    )
                return None
            if self._broken is None:
                try:
                    self._procs[flavour] = self._start(flavour, path)
                except OSError as exc:
                    self._broken = f"{type(exc).__name__}: {exc}"
                    log.warning("replicas start cold: the warm template cannot start (%s)", self._broken)
        return None

    def _prepare_root(self) -> None:
        """Make the root folder, or check that the one there is this user's own, 0700, no link (the
        system temp folder is everyone's: another user could have made it first)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.root, 0o700)
        info = os.lstat(self.root)
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) != 0o700
        ):
            raise PermissionError(f"{self.root} is not a folder of this user's alone (0700)")

    def _log_file(self, flavour: str) -> IO[bytes]:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.log_dir / f"{flavour}.log"
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > MAX_LOG_BYTES:
                path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "ab")

    def _start(self, flavour: str, path: str) -> subprocess.Popen[bytes]:
        self._prepare_root()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # an ended template's
        argv = [self.python, "-m", "aicloud.serving.template", "--socket", path, "--flavour", flavour]
        if self.sandbox is not None:
            argv = self.sandbox.wrap([*argv, "--confine"], workdir=str(self.root), uid=0, template=True)
        with self._log_file(flavour) as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,  # the lifeline: the template exits when this process's end closes
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self.env,
                start_new_session=True,  # a signal to the control plane's group does not reach it
            )
        log.info("starting the warm template %s (pid %d)", flavour, proc.pid)
        return proc

    def options(self, req: LaunchRequest, socket_path: str, uid: int | None) -> str:
        """The supervisor's ``--template`` (:mod:`aicloud.executors.template_launch`)."""
        options = {
            "argv": req.argv,
            "socket": socket_path,
            "root": str(self.root),
            "uid": uid,
            "rlimits": req.limits.rlimits() if self.sandbox is not None else {},
            "threads": req.threads or req.cpus,
            "confine": self.sandbox is not None,
        }
        return json.dumps(options)

    def close(self) -> None:
        """End the templates (their replicas go on); waits a moment for each."""
        with self._lock:
            procs, self._procs = [*self._procs.values(), *self._retired], {}
            self._retired = []
        for proc in procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)  # its sandbox stays while replicas it started run
        for flavour in FLAVOURS:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path(flavour))
        with contextlib.suppress(OSError):
            os.rmdir(self.root)  # unless the folders of replicas still running are in it
