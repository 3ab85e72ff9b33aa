"""The local executor: each job is a subprocess tree on this machine, watched by a supervisor.

Layout of ``jobs_dir`` (``$AICLOUD_HOME/jobs`` by default; folders 0700, files 0600)::

    <jobs_dir>/<job_id>/job.log      stdout+stderr, capped at max_log_bytes (+ one marker line)
    <jobs_dir>/<job_id>/child.json   {"pid", "pgid", "workers": [{"rank", "pid", "pgid"}]}
    <jobs_dir>/<job_id>/cancel.json  {"requested_at", "grace_s"}: written by cancel()
    <jobs_dir>/<job_id>/exit.json    written once by the supervisor when the job has ended

The job's working folder is elsewhere: a private ``aicloud-job-<id>-*`` folder (0700) in the
system temp folder, never under ``$AICLOUD_HOME``, removed by ``cleanup``. With a
:class:`~aicloud.executors.sandbox.Sandbox` every worker runs inside bubblewrap, where that
folder is the only writable one (owned by the workload's own uid when the control plane is
root) and ``$AICLOUD_HOME`` does not exist.

``submit`` starts :mod:`aicloud.executors.supervise` (see there), which daemonizes, runs the
job's worker(s), each in its own process group, writes the log and, at the end, ``exit.json``.
A job with ``workers > 1`` is one supervisor and N workers: the executor picks a free
``MASTER_PORT`` on ``MASTER_ADDR=127.0.0.1`` for their rendezvous, the supervisor gives each
its ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` and, when the job asks for GPUs, its own slice of
``CUDA_VISIBLE_DEVICES``; the first worker to fail fails the job and the others are stopped.
A resubmitted job (a restart: same ``job_id``) appends to the same log. The control
plane holds no pipe and no thread per job: it only looks at files and processes, so a
restarted control plane re-attaches by polling the persisted handle:

* ``exit.json`` present → ``exited`` with its code and usage;
* the supervisor alive (same pid *and* same start time, so a reused pid is not mistaken
  for it; a zombie counts as dead) → ``running``;
* else, if the job was cancelled → ``exited`` with code -9 (SIGKILL reached the supervisor
  before it could write its record; the code is the cancel's SIGKILL, not the job's);
* else → ``lost`` (the supervisor was killed: the exit code is unknowable).

Cancellation: ``cancel`` writes ``cancel.json`` and sends SIGTERM to the supervisor, which
forwards it to the job's process group and SIGKILLs the group ``grace_s`` later. If the
supervisor itself is still alive ``ESCALATE_AFTER_S`` past that deadline, ``poll`` SIGKILLs
the supervisor and the group itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from aicloud.executors import supervise
from aicloud.executors.base import Executor, ExitInfo, LaunchError, LaunchRequest, job_folder, thread_env
from aicloud.executors.sandbox import Sandbox, sandbox_uid
from aicloud.executors.templates import FLAVOURS, Templates
from aicloud.wire.tcp import free_port

if TYPE_CHECKING:
    from aicloud.config import Settings

__all__ = ["LocalExecutor"]

SUPERVISOR = str(Path(supervise.__file__).resolve())
WORKDIR_PREFIX = "aicloud-job-"
ESCALATE_AFTER_S = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _start_ticks(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot: the unit of the ``start_time``
    the supervisor records in a handle (field 22 of ``/proc/<pid>/stat``).

    psutil gives the same fact as ``create_time()``: boot time (whole seconds since the epoch)
    plus that start in seconds. Subtracting the boot time read just before gives the ticks back
    exactly, as any handle, old or new, holds them; a boot time that moves (the wall clock was
    set) changes both terms alike, so it never makes a running supervisor look like another one.
    """
    boot = psutil.boot_time()  # read first: psutil < 6 adds the boot time that this call caches
    return round((psutil.Process(pid).create_time() - boot) * CLOCK_TICKS)


def _alive(pid: int, start_time: int | None) -> bool:
    """Whether the process is running and is the one we started (not a reused pid, not a zombie).

    ``start_time`` (clock ticks since boot, see :func:`_start_ticks`) is None where the
    supervisor could not read it (no ``/proc``: macOS); the pid alone decides there."""
    if pid <= 0:
        return False
    try:
        if psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        # A mismatch is read twice: the boot time, in whole seconds, may have moved between the
        # two reads of one (the clock was adjusted); a reused pid differs both times.
        return start_time is None or start_time == _start_ticks(pid) or start_time == _start_ticks(pid)
    except psutil.Error:  # gone, or not ours to read (the supervisor runs as the control plane)
        return False


def visible_gpus() -> int:
    """NVIDIA GPUs on this machine (``/proc/driver/nvidia/gpus``, else ``/dev/nvidiaN``: psutil does not
    count GPUs); 0 if none."""
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    with contextlib.suppress(OSError):
        return sum(1 for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name))
    return 0


def _rmtree(path: Path) -> None:
    """Remove a folder even if the job made parts of it read-only; never follow symlinks."""
    if not path.is_dir() or path.is_symlink():
        return
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            sub = os.path.join(root, name)
            if not os.path.islink(sub):
                with contextlib.suppress(OSError):
                    os.chmod(sub, 0o700)
    shutil.rmtree(path, ignore_errors=True)


class LocalExecutor(Executor):
    """Runs jobs as supervised subprocesses on this machine; see the module docstring."""

    def __init__(
        self,
        jobs_dir: Path,
        *,
        max_log_bytes: int = 50 * 1024 * 1024,
        default_grace_s: float = 10.0,
        python: str = sys.executable,
        workdir_parent: Path | None = None,
        start_timeout_s: float = 30.0,
        sandbox: Sandbox | None = None,
        warm_templates: bool = False,
    ) -> None:
        if max_log_bytes < 1:
            raise ValueError(f"max_log_bytes must be >= 1, not {max_log_bytes}")
        self.jobs_dir = Path(jobs_dir)
        self.max_log_bytes = max_log_bytes
        self.default_grace_s = default_grace_s
        self.python = python
        self.workdir_parent = workdir_parent
        self.start_timeout_s = start_timeout_s
        self.sandbox = sandbox
        self.templates = Templates(self.jobs_dir, python, sandbox) if warm_templates else None

    @classmethod
    def from_settings(cls, settings: Settings, sandbox: Sandbox | None = None) -> LocalExecutor:
        """The executor the control plane uses: jobs under ``settings.resolved_jobs_dir``, each in
        ``sandbox`` (None: unsandboxed, ``AICLOUD_ISOLATION=none``)."""
        return cls(
            settings.resolved_jobs_dir,
            max_log_bytes=settings.max_log_bytes,
            default_grace_s=settings.cancel_grace_seconds,
            sandbox=sandbox,
            warm_templates=settings.warm_template,
        )

    # -- paths -------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """``<jobs_dir>/<job_id>``; raises LaunchError for an id that is not a plain name."""
        return job_folder(self.jobs_dir, job_id)

    @staticmethod
    def _dir(handle: dict[str, Any]) -> Path:
        try:
            return Path(handle["job_dir"])
        except (KeyError, TypeError):
            raise ValueError(f"not a local executor handle: {handle!r}") from None

    def log_path(self, handle: dict[str, Any]) -> Path:
        """``<job_dir>/job.log``."""
        return self._dir(handle) / supervise.LOG_NAME

    # -- submit ------------------------------------------------------------------------------

    def _prepare_env(self, req: LaunchRequest, workdir: str | None) -> dict[str, str]:
        env = dict(req.env)
        for name, value in thread_env(req).items():
            env.setdefault(name, value)
        if req.workers > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        if workdir is not None:
            env.setdefault("AICLOUD_WORKDIR", workdir)
            output = env.setdefault("AICLOUD_OUTPUT_DIR", os.path.join(workdir, "output"))
            if Path(output).is_relative_to(workdir):
                os.makedirs(output, mode=0o700, exist_ok=True)
        return env

    def submit(self, req: LaunchRequest) -> dict[str, Any]:
        """Start the job's supervisor and return the handle (pid + start time + folders)."""
        if not req.argv:
            raise LaunchError("argv is empty: nothing to run", permanent=True)
        if req.cpus < 1:
            raise LaunchError(f"cpus must be >= 1, not {req.cpus}", permanent=True)
        if req.workers < 1:
            raise LaunchError(f"workers must be >= 1, not {req.workers}", permanent=True)
        if req.gpus < 0:
            raise LaunchError(f"gpus must be >= 0, not {req.gpus}", permanent=True)
        if req.gpus > 0 and req.gpus * req.workers > (have := visible_gpus()):
            raise LaunchError(
                f"the job needs {req.gpus * req.workers} GPU(s) ({req.workers} worker(s) x {req.gpus}); "
                f"this machine has {have}",
                permanent=True,
            )
        job_dir = self.job_dir(req.job_id)
        self.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        job_dir.mkdir(mode=0o700, exist_ok=True)
        for stale in (supervise.EXIT_NAME, supervise.CANCEL_NAME, supervise.CHILD_NAME):
            (job_dir / stale).unlink(missing_ok=True)  # from an earlier attempt at the same job
        # the log exists from submit on (a reader right after submit finds it empty, not missing);
        # a restart appends to it
        os.close(os.open(job_dir / supervise.LOG_NAME, os.O_WRONLY | os.O_CREAT, 0o600))
        owns_workdir = req.cwd is None
        templates = self.templates
        warm = templates.ready(str(req.template)) if templates is not None and templates.usable(req) else None
        workdir = (
            tempfile.mkdtemp(
                prefix=f"{WORKDIR_PREFIX}{req.job_id}-",
                dir=templates.root if templates is not None and warm else self.workdir_parent,
            )
            if req.cwd is None
            else req.cwd
        )
        try:
            env = self._prepare_env(req, workdir if owns_workdir else None)
            argv = req.argv
            uid = None
            if self.sandbox is not None:
                uid = sandbox_uid(req.job_id)
                if owns_workdir:
                    self.sandbox.give(workdir, uid)
                argv = self.sandbox.wrap(
                    argv,
                    workdir=workdir,
                    uid=uid,
                    gpus=req.gpus * req.workers,
                    rlimits=req.limits.rlimits(),
                    writable=[req.env["AICLOUD_ENVS_DIR"]] if "AICLOUD_ENVS_DIR" in req.env else [],
                    readonly=[p] if (p := req.env.get("AICLOUD_ENV_PYTHON_PREFIX")) else [],
                )
            template = (
                ["--template", templates.options(req, warm, uid)] if templates is not None and warm else []
            )
            cmd = [
                self.python, "-I", SUPERVISOR, str(job_dir.resolve()), str(self.max_log_bytes),
                str(self.default_grace_s), "--workers", str(req.workers), "--gpus", str(req.gpus),
                "--sandboxed", str(int(self.sandbox is not None)), *template, "--", *argv,
            ]  # fmt: skip
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    env=env,
                    cwd=workdir,
                    timeout=self.start_timeout_s,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise LaunchError(f"could not start the job supervisor: {exc}") from exc
            if done.returncode != 0:
                err = done.stderr.decode("utf-8", "replace").strip()[-2000:]
                raise LaunchError(f"the job supervisor failed to start (exit {done.returncode}): {err}")
            try:
                started = json.loads(done.stdout)
                pid, start_time = int(started["pid"]), started["start_time"]
            except (ValueError, KeyError, TypeError) as exc:
                raise LaunchError(f"the job supervisor said {done.stdout[:200]!r}") from exc
        except BaseException:
            if owns_workdir:
                _rmtree(Path(workdir))
            raise
        return {
            "executor": "local",
            "job_id": req.job_id,
            "job_dir": str(job_dir.resolve()),
            "pid": pid,
            "start_time": start_time,
            "workdir": workdir,
            "owns_workdir": owns_workdir,
            "sandboxed": self.sandbox is not None,
            "workers": req.workers,
            "submitted_at": time.time(),
            **({"template": req.template} if warm else {}),
        }

    # -- poll / cancel -----------------------------------------------------------------------

    @staticmethod
    def _supervisor_alive(handle: dict[str, Any]) -> bool:
        return _alive(int(handle.get("pid") or 0), handle.get("start_time"))

    def _exit_info(self, job_dir: Path) -> ExitInfo | None:
        record = supervise.read_json(job_dir / supervise.EXIT_NAME)
        if record is None:
            return None
        return ExitInfo.from_record(record)

    def poll(self, handle: dict[str, Any]) -> ExitInfo:
        """See the module docstring for how running, exited and lost are told apart."""
        job_dir = self._dir(handle)
        info = self._exit_info(job_dir)
        if info is not None:
            return info
        if self._supervisor_alive(handle):
            self._escalate_if_overdue(handle)
            return ExitInfo("running")
        info = self._exit_info(job_dir)  # it may have written its record and exited meanwhile
        if info is not None:
            return info
        wall = max(0.0, time.time() - float(handle.get("submitted_at") or time.time()))
        if (job_dir / supervise.CANCEL_NAME).exists():
            return ExitInfo("exited", exit_code=-signal.SIGKILL, wall_seconds=round(wall, 3))
        return ExitInfo("lost", wall_seconds=round(wall, 3))

    def _escalate_if_overdue(self, handle: dict[str, Any]) -> None:
        cancel = supervise.read_json(self._dir(handle) / supervise.CANCEL_NAME)
        if cancel is None:
            return
        deadline = float(cancel.get("requested_at", 0)) + float(cancel.get("grace_s", 0))
        if time.time() > deadline + ESCALATE_AFTER_S:
            self._kill_everything(handle)

    def cancel(self, handle: dict[str, Any], grace_s: float) -> None:
        """Record the cancel (first call wins) and SIGTERM the supervisor; returns at once."""
        job_dir = self._dir(handle)
        cancel_path = job_dir / supervise.CANCEL_NAME
        if not cancel_path.exists():
            supervise.write_json_atomic(
                str(cancel_path), {"requested_at": time.time(), "grace_s": max(0.0, float(grace_s))}
            )
        if (job_dir / supervise.EXIT_NAME).exists():
            return
        if self._supervisor_alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(handle["pid"]), signal.SIGTERM)

    def _kill_everything(self, handle: dict[str, Any]) -> None:
        """SIGKILL the supervisor (if it is still ours) and the job's process group."""
        if self._supervisor_alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(handle["pid"]), signal.SIGKILL)
        child = supervise.read_json(self._dir(handle) / supervise.CHILD_NAME) or {}
        groups = {int(child.get("pgid") or 0)}
        for worker in child.get("workers") or []:
            if isinstance(worker, dict):
                groups.add(int(worker.get("pgid") or 0))
        for pgid in groups:
            if pgid > 1:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)

    def prepare(self, templates: Iterable[str]) -> None:
        """Start the warm templates of these flavours now (see :class:`Executor`)."""
        if self.templates is not None and (self.sandbox is None or self.sandbox.as_root):
            for flavour in sorted(set(templates) & set(FLAVOURS)):
                self.templates.ready(flavour)

    def close(self) -> None:
        """End the warm templates (their replicas go on running)."""
        if self.templates is not None:
            self.templates.close()

    # -- cleanup -----------------------------------------------------------------------------

    def cleanup(self, handle: dict[str, Any]) -> None:
        """Kill what is left of a job that did not end by itself; remove its working folder.

        The log and ``exit.json`` stay (the server keeps the log as a blob, then deletes it).
        """
        job_dir = self._dir(handle)
        if not (job_dir / supervise.EXIT_NAME).exists():
            self._kill_everything(handle)
        workdir = handle.get("workdir")
        if handle.get("owns_workdir") and workdir and Path(workdir).name.startswith(WORKDIR_PREFIX):
            _rmtree(Path(workdir))
