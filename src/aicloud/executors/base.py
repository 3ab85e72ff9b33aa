"""The Executor interface: where a job's process runs, and how the control plane watches it.

An executor starts a workload from a :class:`LaunchRequest` and returns a *handle*: a small
JSON-serialisable dict the controller persists with the job (``Job.handle``). Everything
after that goes through the handle alone, so a restarted control plane (a new executor
object) re-attaches to running jobs by polling their persisted handles::

    handle = executor.submit(request)      # starts the process; returns at once
    executor.poll(handle)                  # ExitInfo("running") ... ExitInfo("exited", 0, ...)
    executor.cancel(handle, grace_s=10)    # SIGTERM now, SIGKILL after grace_s; returns at once
    executor.log_path(handle)              # the job's (growing) log file
    executor.cleanup(handle)               # after the end: remove the working folder; idempotent

Rules every implementation follows:

* ``poll`` never blocks and never raises for a job that merely died: a process that is
  gone without a recorded exit is ``lost``.
* ``cancel`` is idempotent (the controller may call it again after its own restart) and
  does not wait for the grace period; the end is reported by a later ``poll``.
* ``cleanup`` may be called on a job that is still running (a launch that lost a race):
  it then kills what is left of it first.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "THREAD_VARS",
    "Executor",
    "ExitInfo",
    "LaunchError",
    "LaunchRequest",
    "WorkloadLimits",
    "job_folder",
    "thread_env",
]


CPU_GRACE_S = 5


@dataclass(frozen=True)
class WorkloadLimits:
    """Resource limits of one workload process tree (POSIX rlimits, applied by the sandbox).

    ``open_files`` and ``processes`` always apply (``processes`` counts the workload's own
    uid when the control plane is root); ``memory_mb`` (address space) and ``cpu_seconds``
    (CPU time of each process) only when set.
    """

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    processes: int = 4096
    open_files: int = 65536

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> WorkloadLimits:
        """The limits of a job or deployment spec's ``limits`` object (absent fields: defaults)."""
        values = {k: v for k, v in (spec or {}).items() if v is not None and k in cls.__dataclass_fields__}
        return cls(**values)

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """``prlimit`` option names to (soft, hard) values. CPU time: SIGXCPU at the limit, SIGKILL
        ``CPU_GRACE_S`` later (a process may catch SIGXCPU to save its work)."""
        limits = {"nofile": (self.open_files,) * 2, "nproc": (self.processes,) * 2}
        if self.memory_mb is not None:
            limits["as"] = (self.memory_mb * 1024 * 1024,) * 2
        if self.cpu_seconds is not None:
            limits["cpu"] = (self.cpu_seconds, self.cpu_seconds + CPU_GRACE_S)
        return limits


@dataclass(frozen=True)
class LaunchRequest:
    """What to run for a job.

    ``env`` is the child's whole environment (the caller builds it; nothing is inherited
    from the control plane). ``cpus`` sets the thread-count variables (``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``AICLOUD_CPUS``...) unless ``env``
    already has them; ``threads``, when set, is the intra-op thread count instead of ``cpus``
    (``AICLOUD_CPUS`` stays ``cpus``): a replica that runs several batches at once splits its
    cpus among them. ``workers`` > 1 starts that many copies of ``argv`` as one job, each
    with the variables torchrun gives (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; the executor picks the rendezvous
    address); ``cpus`` and ``gpus`` are per worker. The job's exit is the first worker's
    failure (the others are then stopped) or 0 when every worker exited 0.

    With ``cwd`` None the executor makes a private working folder (0700, outside
    ``$AICLOUD_HOME``), passes it as ``AICLOUD_WORKDIR`` (and ``AICLOUD_OUTPUT_DIR`` =
    ``<workdir>/output`` unless set) and removes it in ``cleanup``. ``limits`` bound the
    workload when the executor runs it in the sandbox (:mod:`aicloud.executors.sandbox`).

    ``template``: a serving replica that may be forked from a warm template of that flavour
    (``serving``, or ``serving-torch`` when it needs torch; :mod:`aicloud.executors.templates`)
    instead of starting a new interpreter; None, or an executor without templates: a cold start.
    """

    job_id: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cpus: int = 1
    cwd: str | None = None
    workers: int = 1
    gpus: int = 0
    threads: int | None = None
    limits: WorkloadLimits = field(default_factory=WorkloadLimits)
    template: str | None = None


THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def thread_env(req: LaunchRequest) -> dict[str, str]:
    """The thread-count variables of ``req`` (see :class:`LaunchRequest`)."""
    threads = str(req.threads or req.cpus)
    return {**dict.fromkeys(THREAD_VARS, threads), "AICLOUD_CPUS": str(req.cpus)}


@dataclass(frozen=True)
class ExitInfo:
    """What ``poll`` knows about a job's process.

    ``state``: ``running``; ``exited`` (``exit_code`` known: 0 success, >0 the process's own
    code, <0 killed by that signal, e.g. -9 after a cancel's SIGKILL); or ``lost`` (the
    process is gone and its exit code is unknowable). Usage fields are None when unknown.
    """

    state: Literal["running", "exited", "lost"]
    exit_code: int | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    wall_seconds: float | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ExitInfo:
        """The end of a job from its executor's ``exit.json`` record."""
        return cls(
            "exited",
            exit_code=int(record["exit_code"]),
            cpu_seconds=record.get("cpu_seconds"),
            peak_rss_bytes=record.get("peak_rss_bytes"),
            wall_seconds=record.get("wall_seconds"),
        )

    def usage(self) -> dict[str, Any]:
        """The known usage numbers (and the exit code), as stored in ``Job.usage``."""
        values = {
            "exit_code": self.exit_code,
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "wall_seconds": self.wall_seconds,
        }
        return {k: v for k, v in values.items() if v is not None}


class LaunchError(RuntimeError):
    """The executor could not start a job (bad request, or the machinery failed).

    ``permanent``: the same request would fail the same way again (a request the executor refuses,
    more GPUs than the machine or cluster has), so a caller does not retry it; otherwise the cause
    may pass (the supervisor did not start under load, no free resources yet)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Executor(abc.ABC):
    """Runs workloads; see the module docstring for the contract."""

    @abc.abstractmethod
    def submit(self, req: LaunchRequest) -> dict[str, Any]:
        """Start the job and return its JSON-serialisable handle. Raises LaunchError."""

    @abc.abstractmethod
    def poll(self, handle: dict[str, Any]) -> ExitInfo:
        """The job's state now; non-blocking."""

    @abc.abstractmethod
    def cancel(self, handle: dict[str, Any], grace_s: float) -> None:
        """SIGTERM the job's whole process group, SIGKILL it ``grace_s`` later. Idempotent."""

    @abc.abstractmethod
    def log_path(self, handle: dict[str, Any]) -> Path:
        """The job's combined stdout/stderr log file (grows while the job runs)."""

    @abc.abstractmethod
    def cleanup(self, handle: dict[str, Any]) -> None:
        """Release what the job held (its private working folder...). Idempotent."""

    def prepare(self, templates: Iterable[str]) -> None:  # noqa: B027 (optional)
        """Start, in the background, the warm templates of these flavours (:class:`LaunchRequest`'s
        ``template``) that launches will ask for; executors without templates ignore it."""

    def close(self) -> None:  # noqa: B027 (optional: most executors hold nothing of their own)
        """Release what the executor itself holds (the local executor's warm templates); running
        workloads go on."""


_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def job_folder(jobs_dir: Path, job_id: str) -> Path:
    """``<jobs_dir>/<job_id>``, the executor's folder of one job; LaunchError for an id that is not
    a plain name (no separators, no ``..``)."""
    if not _JOB_ID.fullmatch(job_id):
        raise LaunchError(f"job id {job_id!r} is not a valid folder name", permanent=True)
    return jobs_dir / job_id
