"""The workload sandbox: every job, sweep trial and replica runs inside bubblewrap.

A workload is user code from some workspace; the control plane holds every workspace's
data and keys. :class:`Sandbox` turns a workload's ``argv`` into a ``bwrap`` command line
(Debian's ``bubblewrap``) that gives it:

* **its own PID, IPC, UTS and cgroup namespaces**, with a fresh ``/proc``: the control plane,
  other workloads and their ``/proc/<pid>/environ`` are invisible;
* **a filesystem of its own**, read-only but for its working folder: the system folders
  (``/usr``, ``/etc``, the ``/bin``/``/lib`` links), the Python installation and the folders
  on ``sys.path`` (read-only), the working folder (read-write, at its own path), a private
  ``/tmp`` and ``/dev/shm`` (tmpfs), a minimal ``/dev`` (plus the NVIDIA devices of a GPU
  job) and ``/sys`` (read-only). ``$AICLOUD_HOME`` (database, master key, credentials,
  blobs, other jobs' logs) is never mounted, and is covered by an empty tmpfs should it lie
  under a folder that is;
* **an unprivileged uid**: when the control plane runs as root, the workload drops to a uid
  of its own (:func:`sandbox_uid`, ``setpriv``; no capabilities, no supplementary groups,
  ``no_new_privs``) after bubblewrap has built its mounts, so file permissions hold as well
  as the mount view. Without root, bubblewrap makes a user namespace and the workload keeps
  the control plane's uid, but sees only the mounts above;
* **resource limits** (:class:`aicloud.executors.base.WorkloadLimits`), applied with
  ``prlimit`` before bubblewrap starts and inherited by everything inside: open files and
  processes always, address space and CPU time when the spec asks.

PID 1 is :mod:`aicloud.executors.sandbox_init` (bubblewrap's ``--as-pid-1``): it starts the
workload and reaps every process of the sandbox, so their CPU time and peak memory reach the
supervisor's ``wait4`` (bubblewrap's own init exits without passing them on).

The network is shared with the host: a workload reaches the control plane's API with its
scoped token, and any other address the host can reach (``docs/security.md`` says what that
means for a deployment). The init ignores SIGTERM;
:func:`aicloud.executors.procgroup.signal_group` delivers a graceful stop to the workload's
processes without killing the bubblewrap monitor first (which would SIGKILL the sandbox at
once), and :func:`aicloud.executors.procgroup.exit_code` maps bubblewrap's
``128 + N`` back to the ``-N`` of a signal death.

Only the standard library: the Ray worker builds its command line on its own node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ISOLATION_MODES",
    "Sandbox",
    "SandboxUnavailable",
    "sandbox_uid",
]

ISOLATION_MODES = ("sandbox", "none")
UID_BASE = 1_900_000_000
UID_SPAN = 1_000_000
INIT = str(Path(__file__).with_name("sandbox_init.py").resolve())
_SYSTEM_DIRS = ("/usr", "/etc")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: What a warm template's sandbox keeps (bubblewrap drops every capability of root otherwise): what its
#: children need to make namespaces and mounts (SYS_ADMIN), drop to their uid (SETUID, SETGID) and empty
#: their bounding set (SETPCAP). It runs only aicloud's code, holds no secret, and its socket is the
#: control plane's alone; each replica drops them all before its own code runs.
TEMPLATE_CAPS = ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here; the message says why and what to do."""


def sandbox_uid(workload_id: str) -> int:
    """The uid a workload runs as when the control plane is root: one per workload id, in a
    range no distribution hands out (1.9e9 + crc32 mod 1e6)."""
    return UID_BASE + zlib.crc32(workload_id.encode()) % UID_SPAN


def _under(path: str, folders: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``folders`` or lies below one."""
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def _covering(paths: Iterable[str]) -> list[str]:
    """The shortest set of folders that covers ``paths`` (a path under another is dropped)."""
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths}, key=len):
        if not _under(path, kept):
            kept.append(path)
    return kept


def python_paths() -> list[str]:
    """The folders this interpreter needs: its prefixes and what is on ``sys.path``, outside
    the system folders that are mounted anyway."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    candidates += [p for p in sys.path if p and os.path.exists(p)]
    candidates.append(str(Path(__file__).resolve().parents[2]))  # aicloud itself (editable installs)
    return [
        p
        for p in _covering(c for c in candidates if os.path.exists(c))
        if p != "/" and not _under(p, _SYSTEM_DIRS)
    ]


_RLIMITS = {"nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "as": "RLIMIT_AS", "cpu": "RLIMIT_CPU"}


def _within_hard_limit(name: str, value: int) -> int:
    """``value``, lowered to this process's hard limit (raising one needs a privilege that a
    container's root may lack)."""
    import resource

    hard = resource.getrlimit(getattr(resource, _RLIMITS[name]))[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _parents(path: str, made: set[str]) -> list[str]:
    """bwrap options that create the folders above ``path`` world-traversable (0755; bwrap's own
    are 0700, which an unprivileged workload could not pass), once each."""
    options: list[str] = []
    for parent in reversed(Path(path).parents):
        name = str(parent)
        if name not in made and not _under(name, _SYSTEM_DIRS):
            options += ["--perms", "0755", "--dir", name]
        made.add(name)
    return options


@dataclass(frozen=True)
class Sandbox:
    """Builds sandboxed command lines; see the module docstring.

    ``hidden``: folders the workload must never see (``$AICLOUD_HOME``, the jobs folder...).
    ``readonly``: extra folders mounted read-only (default: :func:`python_paths`).
    """

    bwrap: str
    hidden: tuple[str, ...] = ()
    readonly: tuple[str, ...] = field(default_factory=lambda: tuple(python_paths()))
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    setpriv: str | None = None
    prlimit: str | None = None

    @classmethod
    def detect(cls, hidden: Iterable[str | os.PathLike[str]] = ()) -> Sandbox:
        """The sandbox of this machine; SandboxUnavailable says what is missing."""
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(
                f"the workload sandbox needs Linux (this is {sys.platform}); on a single-user machine "
                "set AICLOUD_ISOLATION=none to run workloads unsandboxed"
            )
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed: install it (Debian/Ubuntu: apt-get install "
                "bubblewrap; Fedora: dnf install bubblewrap), or on a single-user machine set "
                "AICLOUD_ISOLATION=none to run workloads unsandboxed"
            )
        prlimit = shutil.which("prlimit")
        setpriv = shutil.which("setpriv")
        as_root = os.geteuid() == 0
        if prlimit is None or (as_root and setpriv is None):
            raise SandboxUnavailable("the workload sandbox needs prlimit and setpriv (util-linux)")
        return cls(
            bwrap=bwrap,
            hidden=tuple(str(Path(h).resolve()) for h in hidden),
            as_root=as_root,
            setpriv=setpriv,
            prlimit=prlimit,
        )

    def wrap(
        self,
        argv: list[str],
        *,
        workdir: str,
        uid: int,
        gpus: int = 0,
        rlimits: dict[str, tuple[int, int]] | None = None,
        tmpdir: str = "/tmp",
        template: bool = False,
        writable: Iterable[str] = (),
        readonly: Iterable[str] = (),
    ) -> list[str]:
        """``argv`` inside the sandbox, with ``workdir`` writable and the current folder.

        ``rlimits``: ``prlimit`` option names (``nofile``, ``nproc``, ``as``, ``cpu``) to (soft,
        hard) values, lowered to this process's own hard limits where those are lower.
        ``tmpdir``: the workload's ``TMPDIR`` (``/tmp`` is a tmpfs, in memory: big temporary files
        are better in the working folder).
        ``writable``: extra folders bound read-write at their own paths (a workspace's runtime-env
        cache, ``AICLOUD_ENVS_DIR``: see :mod:`aicloud.executors.envrun`); they may lie under a hidden one.
        ``readonly``: extra folders mounted read-only besides :attr:`readonly` (another Python
        installation a runtime env is built on).
        ``template``: a warm template's sandbox (:mod:`aicloud.serving.template`, root only): it keeps
        :data:`TEMPLATE_CAPS` and the control plane's uid (``uid`` is unused) so that each replica it
        forks can make namespaces of its own and drop to its own uid; it does not die with its parent,
        and its init waits for every process (a replica outlives the template's own end).
        """
        cmd: list[str] = []
        if rlimits and self.prlimit:
            cmd.append(self.prlimit)
            for name, (soft, hard) in sorted(rlimits.items()):
                hard = _within_hard_limit(name, hard)
                cmd.append(f"--{name}={min(soft, hard)}:{hard}")
            cmd.append("--")
        cmd += [self.bwrap, *([] if template else ["--die-with-parent"]), "--as-pid-1", "--unshare-pid"]
        cmd += ["--unshare-ipc", "--unshare-uts"]
        if template:
            cmd += ["--cap-add", ",".join(TEMPLATE_CAPS)]
        cmd += ["--unshare-cgroup-try", "--hostname", "aicloud-workload"]
        if not self.as_root:
            cmd.append("--unshare-user")
        cmd += ["--proc", "/proc", "--dev", "/dev"]
        cmd += ["--perms", "1777", "--tmpfs", "/dev/shm", "--perms", "1777", "--tmpfs", "/tmp"]
        made: set[str] = {"/", "/tmp", "/dev", "/proc"}
        for path in _SYSTEM_DIRS:
            if os.path.isdir(path):
                cmd += ["--ro-bind", path, path]
        for path in _SYSTEM_LINKS:
            if os.path.islink(path):
                cmd += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                cmd += ["--ro-bind", path, path]
        for path in [*self.readonly, *readonly]:
            cmd += [*_parents(path, made), "--ro-bind-try", path, path]
        if os.path.isdir("/sys"):
            cmd += ["--ro-bind", "/sys", "/sys"]
        if gpus > 0:
            for name in sorted(os.listdir("/dev")):
                if name.startswith("nvidia"):
                    cmd += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
        mounted = [*_SYSTEM_DIRS, *self.readonly]
        for path in self.hidden:  # only matters where a hidden folder lies under a mounted one
            if _under(path, mounted):
                cmd += ["--tmpfs", path]
        for path in writable:
            cmd += [*_parents(path, made), "--bind", path, path]
        cmd += [*_parents(workdir, made), "--bind", workdir, workdir]
        cmd += ["--chdir", workdir, "--setenv", "HOME", workdir, "--setenv", "TMPDIR", tmpdir, "--"]
        cmd += [sys.executable, "-I", "-S", INIT]
        if template:
            return [*cmd, "--reap-all", *argv]
        if self.as_root and self.setpriv:
            cmd += [
                self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
            ]  # fmt: skip
        return cmd + argv

    def confine(self, argv: list[str], workdir: str, workload_id: str) -> list[str]:
        """``argv`` as workload ``workload_id`` in the sandbox, with ``workdir`` (made by the caller,
        removed by it) as its own working and temporary folder; default limits."""
        uid = sandbox_uid(workload_id)
        self.give(workdir, uid)
        rlimits = {"nofile": (65536, 65536), "nproc": (4096, 4096)}
        return self.wrap(argv, workdir=workdir, uid=uid, rlimits=rlimits, tmpdir=workdir)

    def give(self, path: str, uid: int) -> None:
        """Make ``path`` (a working folder, recursively) the workload's own when it runs under a
        uid of its own; a no-op otherwise."""
        if not self.as_root:
            return
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                with contextlib.suppress(OSError):
                    os.lchown(os.path.join(root, name), uid, uid)
        os.lchown(path, uid, uid)

    def probe(self, timeout_s: float = 30.0) -> None:
        """Run ``python -c 'import aicloud'`` in the sandbox once; SandboxUnavailable when it fails
        (the kernel refuses namespaces, a mount is missing...)."""
        import tempfile

        workdir = tempfile.mkdtemp(prefix="aicloud-probe-")
        uid = sandbox_uid("probe")
        try:
            self.give(workdir, uid)
            argv = [sys.executable, "-I", "-c", "import aicloud"]
            cmd = self.wrap(argv, workdir=workdir, uid=uid, rlimits={"nofile": (1024, 1024)})
            try:
                done = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxUnavailable(f"the workload sandbox failed to start: {exc}") from None
            if done.returncode != 0:
                err = done.stderr.decode("utf-8", "replace").strip()[-1000:]
                raise SandboxUnavailable(
                    f"the workload sandbox does not work here (exit {done.returncode}): {err}. "
                    "The kernel may refuse user namespaces (sysctl kernel.unprivileged_userns_clone, "
                    "or AppArmor's restrict_unprivileged_userns); on a single-user machine "
                    "AICLOUD_ISOLATION=none runs workloads unsandboxed"
                )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
