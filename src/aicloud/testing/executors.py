"""A fake :class:`~aicloud.executors.Executor` for unit tests: jobs end when the test says so.

No processes: ``submit`` records the request and returns a handle; the job stays
``running`` until the test calls :meth:`FakeExecutor.finish` (an exit code, optional log
text) or :meth:`FakeExecutor.lose`. ``cancel`` is recorded and, by default, ends the job
at once with exit code -15 (as a process that obeys SIGTERM would); set
``cancel_ends_job=False`` to model a job that ignores it. ``fail_submit`` makes ``submit``
raise (all jobs, or the ids in a set); ``fail_poll`` makes ``poll`` raise. Logs are real
files under ``log_dir`` so log readers can be tested too. Thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aicloud.executors.base import Executor, ExitInfo, LaunchError, LaunchRequest

__all__ = ["FakeExecutor", "FakeJob"]


@dataclass
class FakeJob:
    """What the fake knows about one submitted job."""

    request: LaunchRequest
    state: Literal["running", "exited", "lost"] = "running"
    exit_code: int | None = None
    cancels: list[float] = field(default_factory=list)  # grace_s of each cancel call
    cleanups: int = 0


class FakeExecutor(Executor):
    """See the module docstring."""

    def __init__(self, log_dir: Path, *, cancel_ends_job: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.cancel_ends_job = cancel_ends_job
        self.fail_submit: bool | set[str] = False
        self.fail_poll: bool = False
        self.jobs: dict[str, FakeJob] = {}
        self.submitted: list[str] = []  # job ids in submission order (resubmits repeat)
        self.max_running_seen = 0
        self._lock = threading.Lock()

    # -- test controls -----------------------------------------------------------------------

    def finish(self, job_id: str, exit_code: int = 0, log: str = "") -> None:
        """End a running job with ``exit_code``, appending ``log`` to its log file."""
        with self._lock:
            if log:
                with open(self._log(job_id), "a", encoding="utf-8") as f:
                    f.write(log)
            job = self.jobs[job_id]
            job.state, job.exit_code = "exited", exit_code

    def lose(self, job_id: str) -> None:
        """Make a running job vanish (as if its process was killed with no record)."""
        with self._lock:
            self.jobs[job_id].state = "lost"

    def running_ids(self) -> list[str]:
        """Ids of jobs whose (fake) process is running now."""
        with self._lock:
            return [i for i, j in self.jobs.items() if j.state == "running"]

    def _log(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.log"

    def _job(self, handle: dict[str, Any]) -> FakeJob:
        try:
            return self.jobs[handle["fake_job"]]
        except (KeyError, TypeError):
            raise ValueError(f"not a fake executor handle: {handle!r}") from None

    # -- the Executor interface --------------------------------------------------------------

    def submit(self, req: LaunchRequest) -> dict[str, Any]:
        with self._lock:
            fail = self.fail_submit
            if fail is True or (isinstance(fail, set) and req.job_id in fail):
                raise LaunchError(f"fake submit failure for {req.job_id}")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._log(req.job_id).write_bytes(b"")
            self.jobs[req.job_id] = FakeJob(req)
            self.submitted.append(req.job_id)
            running = sum(1 for j in self.jobs.values() if j.state == "running")
            self.max_running_seen = max(self.max_running_seen, running)
            return {"executor": "fake", "fake_job": req.job_id}

    def poll(self, handle: dict[str, Any]) -> ExitInfo:
        with self._lock:
            if self.fail_poll:
                raise RuntimeError("fake poll failure")
            job = self._job(handle)
            if job.state == "exited":
                return ExitInfo(
                    "exited", job.exit_code, cpu_seconds=0.5, peak_rss_bytes=1 << 20, wall_seconds=1.0
                )
            return ExitInfo(job.state)

    def cancel(self, handle: dict[str, Any], grace_s: float) -> None:
        with self._lock:
            job = self._job(handle)
            job.cancels.append(grace_s)
            if self.cancel_ends_job and job.state == "running":
                job.state, job.exit_code = "exited", -15

    def log_path(self, handle: dict[str, Any]) -> Path:
        return self._log(self._job(handle).request.job_id)

    def cleanup(self, handle: dict[str, Any]) -> None:
        with self._lock:
            self._job(handle).cleanups += 1
