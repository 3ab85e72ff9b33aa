"""A replica forked from the warm template (:mod:`aicloud.serving.template`): it reads its launch
request, confines itself as the workload sandbox confines a cold replica, and runs
:func:`aicloud.serving.replica.main`.

Three processes, as bubblewrap's are for a cold replica:

* **the monitor** (the template's child; it stays in the template's sandbox): reads the request, takes
  its log as stdout and stderr, applies the rlimits, answers its pid, makes new mount, PID, IPC, UTS
  and cgroup namespaces, forks the init, and waits: for the init's end (it sends the exit code) or for
  the supervisor's end of the connection to close (the supervisor was killed: it SIGKILLs the init, and
  with it the namespace). It ignores SIGTERM, as the cold sandbox's monitor does not get it
  (:func:`aicloud.executors.procgroup.signal_group`).
* **the init**, PID 1 of the new namespace: mounts a fresh ``/proc``, a private ``/tmp`` and
  ``/dev/shm``, covers the template's folder of working folders (every other replica's, and the
  template's socket) with an empty tmpfs and binds its own working folder back at its path; then, like
  :mod:`aicloud.executors.sandbox_init`, forks the replica and reaps every process until it ends.
* **the replica**: drops to its own uid as ``setpriv`` does for a cold one (no supplementary groups, an
  empty bounding set, no capabilities, ``no_new_privs``), takes its environment, folder and thread
  count, and runs the replica's ``main``.

Without ``--confine`` (``AICLOUD_ISOLATION=none``) the monitor forks the replica itself, which keeps
the template's uid and namespaces, as an unsandboxed cold replica does.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys
from typing import Any

from aicloud.serving.template import HEADER

MODULES = ("aicloud.serving.replica",)  # what a template runs: the replica, nothing else
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID = 0x08000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
MS_RDONLY, MS_REMOUNT = 1, 32
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
PR_SET_MM, PR_SET_MM_MAP = 35, 14
_MM_FIELDS = (
    "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack", "arg_start",
    "arg_end", "env_start", "env_end", "auxv",
)  # fmt: skip
_RLIMITS = {"nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "as": "RLIMIT_AS", "cpu": "RLIMIT_CPU"}
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {target}")


def _send(conn: socket.socket, doc: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(doc).encode() + b"\n")


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The launch request and the fds sent with it."""
    fds: list[int] = []
    data, ancdata, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 4))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += list(memoryview(payload)[:usable].cast("i"))
    if len(data) < HEADER.size:
        raise ValueError("no launch request")
    (size,) = HEADER.unpack_from(data)
    body = bytearray(data[HEADER.size :])
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            raise ValueError("the launch request was cut short")
        body += more
    request = json.loads(bytes(body))
    if not isinstance(request, dict) or request.get("module") not in MODULES:
        raise ValueError(f"a template runs only {', '.join(MODULES)}")
    return request, fds


def _rlimits(limits: dict[str, list[int]]) -> None:
    """Lower this process's limits (inherited by the replica), as ``prlimit`` does for a cold one."""
    for name, (soft, hard) in sorted(limits.items()):
        which = getattr(resource, _RLIMITS[name])
        current = resource.getrlimit(which)[1]
        hard = hard if current == resource.RLIM_INFINITY else min(hard, current)
        resource.setrlimit(which, (min(soft, hard), hard))


def launched(conn: socket.socket, flavour: str, confine: bool) -> int:
    """The monitor (see the module docstring); returns its exit code."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    try:
        request, fds = _receive(conn)
        if not fds:
            raise ValueError("no log fd came with the request")
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[0], 2)
        for fd in {devnull, *fds} - {0, 1, 2}:
            os.close(fd)
        _rlimits(request.get("rlimits") or {})
        if confine:
            flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
            if _libc.unshare(flags | CLONE_NEWCGROUP) != 0:  # bubblewrap's --unshare-cgroup-try
                _check(_libc.unshare(flags), "unshare")
    except Exception as exc:  # nothing of the replica ran: the supervisor starts it the cold way
        _send(conn, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _send(conn, {"pid": os.getpid()})  # the kernel adds this process's credentials (SO_PASSCRED)
    print(f"[aicloud: started from the warm template {flavour}]", flush=True)
    _show_as(["aicloud-warm-monitor"], {})
    child = os.fork()
    if child == 0:
        conn.close()
        if confine:
            _show_as(["aicloud-warm-init"], {})
        os._exit(_init(request) if confine else _replica(request, confine=False))
    code = _wait(child, conn)
    _send(conn, {"exit_code": code})
    return 0


def _wait(pid: int, conn: socket.socket) -> int:
    """Wait for ``pid``; SIGKILL it when the supervisor's end closes. Its exit code (negative: by signal)."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            ready, _, _ = select.select([pidfd, conn.fileno()], [], [])
            if conn.fileno() in ready:
                with contextlib.suppress(OSError):
                    data = conn.recv(4096)
                    if data:
                        continue
                os.kill(pid, signal.SIGKILL)  # the supervisor has gone: so does the replica
                break
            if pidfd in ready:
                break
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _mounts_under(prefix: str, root: str) -> list[tuple[str, int]]:
    """The outermost mount points below ``prefix`` but not below ``root`` (the read-only binds the
    template's sandbox made there: a virtual environment or a source tree under ``/tmp``), each with
    an ``O_PATH`` descriptor, so that they can be bound back once ``prefix`` is covered."""
    points: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix.rstrip("/") + "/") and not _below(point, root):
                points.append(point)
    outer: list[str] = []
    for point in sorted(points):
        if not any(_below(point, o) for o in outer):
            outer.append(point)
    return [(point, os.open(point, os.O_PATH | os.O_NOFOLLOW)) for point in outer]


def _below(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _bind_back(point: str, fd: int) -> None:
    """Bind ``fd`` (a mount kept by :func:`_mounts_under`) read-only at ``point`` again."""
    parent = "/"
    for part in os.path.dirname(point).strip("/").split("/"):
        if part:
            parent = os.path.join(parent, part)
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent, 0o755)
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        with contextlib.suppress(FileExistsError):
            os.mkdir(point, 0o755)
    else:
        os.close(os.open(point, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
    _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.close(fd)


def _init(request: dict[str, Any]) -> int:
    """PID 1 of the replica's namespaces: its mounts, then fork the replica and reap until it ends."""
    try:
        workdir, root = os.path.realpath(request["cwd"]), os.path.realpath(request["root"])
        if not workdir.startswith(root.rstrip("/") + "/"):
            raise ValueError(f"{workdir} is not under the template's folder {root}")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        own = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        kept = _mounts_under("/tmp", root)  # e.g. the virtual environment of a checkout under /tmp
        for target, mode in ((root, "0755"), ("/tmp", "1777"), ("/dev/shm", "1777")):
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode}")
        for point, fd in kept:
            _bind_back(point, fd)
        parent = "/"
        for part in workdir.strip("/").split("/"):  # the folders above it: 0755, as bubblewrap's --dir
            parent = os.path.join(parent, part)
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent, 0o755)
        _mount(f"/proc/self/fd/{own}", workdir, None, MS_BIND)
        os.close(own)
        with contextlib.suppress(OSError):
            socket.sethostname("aicloud-workload")
    except Exception as exc:
        print(f"[aicloud: the warm replica's sandbox failed: {type(exc).__name__}: {exc}]", flush=True)
        return 126
    replica = os.fork()
    if replica == 0:
        os._exit(_replica(request, confine=True))
    while True:  # reap everything until the replica has ended (aicloud.executors.sandbox_init)
        try:
            reaped, status = os.wait()
        except ChildProcessError:
            return 127
        if reaped == replica:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


class _MmMap(ctypes.Structure):
    """``struct prctl_mm_map`` (``PR_SET_MM_MAP``: no capability needed, unlike ``PR_SET_MM_ARG_START``)."""

    _fields_ = [
        *((name, ctypes.c_uint64) for name in _MM_FIELDS),
        ("auxv_size", ctypes.c_uint32),
        ("exe_fd", ctypes.c_uint32),
    ]


_shown: list[ctypes.Array[ctypes.c_char]] = []  # what /proc/<pid>/cmdline and environ show: kept for ever


def _show_as(argv: list[str], env: dict[str, str]) -> None:
    """Make ``/proc/<pid>/cmdline`` and ``environ`` the cold replica's (for ``ps``, and the tools that
    find replicas by their command line and environment) instead of the template's; best effort."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rfind(b")") + 2 :].split()
        field = lambda n: int(fields[n - 3])  # noqa: E731 (numbered as in proc(5))
        _libc.sbrk.restype = ctypes.c_void_p
        mm = _MmMap(
            start_code=field(26), end_code=field(27), start_stack=field(28), start_data=field(45),
            end_data=field(46), start_brk=field(47), brk=_libc.sbrk(0) or field(47), auxv=0, auxv_size=0,
            exe_fd=0xFFFFFFFF,
        )  # fmt: skip
        for items, start, end in (
            (argv, "arg_start", "arg_end"),
            ([f"{k}={v}" for k, v in env.items()], "env_start", "env_end"),
        ):
            data = b"".join(item.encode(errors="replace") + b"\0" for item in items) or b"\0"
            buffer = ctypes.create_string_buffer(data, len(data))
            _shown.append(buffer)
            setattr(mm, start, ctypes.addressof(buffer))
            setattr(mm, end, ctypes.addressof(buffer) + len(data))
        _libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.byref(mm), ctypes.sizeof(mm), 0)
    except (OSError, ValueError, IndexError):
        pass


def _drop_privileges(uid: int) -> None:
    """What ``setpriv --reuid --regid --clear-groups --inh-caps=-all --bounding-set=-all
    --no-new-privs`` does for a cold replica."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())  # noqa: SIM115
    for cap in range(last + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop the bounding set")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # clears the permitted and effective capabilities
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (x2): all empty
    _check(_libc.capset(header, data), "clear the capabilities")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _replica(request: dict[str, Any], *, confine: bool) -> int:
    """The replica itself: its uid, environment, folder and threads, then its ``main``."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _show_as([str(a) for a in request.get("argv") or []], request["env"])
        if confine:
            _drop_privileges(int(request["uid"]))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        _fresh_state(request["cwd"], int(request.get("threads") or 1))
    except Exception as exc:
        print(f"[aicloud: the warm replica could not start: {type(exc).__name__}: {exc}]", flush=True)
        return 126
    from aicloud.serving import replica

    try:
        code = replica.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _fresh_state(cwd: str, threads: int) -> None:
    """What a new interpreter would have had: ``sys.path[0]`` the folder (``python -m``), a temp folder
    read from the environment, random generators of its own, the replica's intra-op threads."""
    import random
    import tempfile

    sys.path[0] = cwd
    sys.argv = [sys.argv[0]]
    tempfile.tempdir = None
    random.seed()
    if "numpy" in sys.modules:
        import numpy as np

        np.random.seed()
        if threads != 1:  # OpenBLAS read OPENBLAS_NUM_THREADS=1 in the template
            with contextlib.suppress(ImportError):
                from threadpoolctl import threadpool_limits

                threadpool_limits(threads, user_api="blas")
    if "torch" in sys.modules:
        import torch

        torch.seed()
        torch.set_num_threads(threads)
