"""The job controller: a reconcile loop that drives stored jobs to their processes and back.

Desired state lives in the job store (``pending`` jobs, ``cancel_requested``); actual state
comes from the executor (``poll``). Each :meth:`JobController.reconcile_once` pass:

1. for every ``running`` job: SIGTERM it if a cancel was requested (once per controller
   lifetime; executors make ``cancel`` idempotent, so a restarted controller may send it
   again), then poll. An ended process is wrapped up (``on_finished``, below), then moves the
   job, compare-and-set, ``running`` → ``succeeded`` (exit 0) / ``failed`` (reason ``error``,
   message = the last 50 log lines) / ``cancelled`` (a cancel was requested, whatever the
   exit), or ``failed`` with reason ``lost`` when the executor lost it. ``usage`` records exit
   code, CPU seconds, peak RSS and wall seconds, priced at the settings' prices
   (``aicloud.entities.usage``). Then ``executor.cleanup(handle)``.
2. starts ``pending`` jobs in queue order (priority desc, then oldest) while fewer than
   ``max_concurrent_jobs`` run: ``launcher(job)`` builds the LaunchRequest, the executor
   starts it, and the job moves ``pending`` → ``running`` with its handle. A launcher or
   executor error fails that job (reason ``launch``) and the pass goes on. A job cancelled
   between the two (the transition loses the race) has its fresh process cancelled.

Restarts (``spec.max_restarts``): a process that failed (exit != 0, or lost) with restarts left
and no cancel requested is not ended: the job stays ``running``, ``attempt`` goes up by one, its
old handle is cleaned up and ``launcher(job)`` starts it again (same run; the workload resumes
from its latest checkpoint). The policy is :mod:`aicloud.controllers.restarts`. ``attempt`` is
stored before the new process starts, so a control plane that dies in between wastes a restart
but never runs two attempts at once.

Re-attachment after a restart is simply the first pass: it polls persisted handles, and a
job whose process is gone becomes ``failed``/``lost``. A job whose handle cannot be polled
(``MAX_POLL_ERRORS`` passes in a row) is also ``lost``, so no job stays running forever.

The wrap-up comes first: ``on_finished(job)`` gets the job as it is about to be stored
(terminal status, reason, message) and the job turns terminal in the store only after it, so
whoever sees a job ended (``job.wait()``) finds its log kept and its run closed. It also runs
for launch failures, so the server can undo what its launcher made. A control plane that dies
between the hook and the transition finds the job still running and wraps it up again at its
first pass: the hook must be idempotent (the server's is: a log already kept is not kept again,
a closed run stays closed), though the failure message then lacks the log lines it had already
stored. When the transition loses a race (a pending job cancelled while it launched), the hook
runs once more with the job as it ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aicloud.config import Settings
from aicloud.controllers.loop import MAX_POLL_ERRORS, ReconcileLoop, poll_counted
from aicloud.controllers.restarts import merge_usage, restart_message, should_restart
from aicloud.entities import Job, JobKind, JobStatus
from aicloud.entities.usage import Prices, with_cost
from aicloud.executors.base import Executor, ExitInfo, LaunchRequest
from aicloud.executors.logs import read_log, tail_lines
from aicloud.executors.runtime_env import collect_envs
from aicloud.store.training import JobStore

__all__ = ["MAX_POLL_ERRORS", "JobController", "LogChunk"]

log = logging.getLogger("aicloud.controllers.jobs")

# The kinds that run processes; a sweep has none (the sweep controller drives it).
PROCESS_KINDS: list[JobKind] = [kind for kind in JobKind if kind is not JobKind.SWEEP]
MESSAGE_LINES = 50
ENV_GC_INTERVAL_S = 3600.0

Launcher = Callable[[Job], LaunchRequest]
FinishedHook = Callable[[Job], None]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LogChunk:
    """A slice of a job's log: ``data`` from the requested offset, the offset to ask for next,
    and whether the log is complete (the job has ended and nothing follows)."""

    data: bytes
    next_offset: int
    complete: bool


class JobController(ReconcileLoop):
    """Reconciles jobs in ``store`` with processes run by ``executor``; see the module docstring.

    ``launcher(job)`` is the server's: it makes the job's run and token and returns the
    LaunchRequest. ``on_finished(job)`` gets the job in its terminal state, just before the store
    does (store the log, revoke the token, close the run). ``max_concurrent`` and ``cancel_grace_s``
    default to the settings'
    ``max_concurrent_jobs`` and ``cancel_grace_seconds``.
    """

    loop_name = "job controller"

    def __init__(
        self,
        store: JobStore,
        executor: Executor,
        settings: Settings,
        launcher: Launcher,
        on_finished: FinishedHook | None = None,
        *,
        interval: float = 0.25,
        max_concurrent: int | None = None,
        cancel_grace_s: float | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.settings = settings
        self.launcher = launcher
        self.on_finished = on_finished
        super().__init__(interval)
        self.max_concurrent = max_concurrent if max_concurrent is not None else settings.max_concurrent_jobs
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, not {self.max_concurrent}")
        self.cancel_grace_s = cancel_grace_s if cancel_grace_s is not None else settings.cancel_grace_seconds
        self._cancel_sent: set[str] = set()
        self._poll_errors: dict[str, int] = {}
        # Processes whose job was cancelled while they started: cancel, wait, clean up.
        self._orphans: list[dict[str, Any]] = []
        self._envs_collected_at: float | None = None  # runtime envs: GC at the first pass, then hourly

    # -- the loop ----------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (running jobs keep running; a new controller re-attaches to them)."""
        self._stop_loop(timeout)

    def reconcile_once(self) -> None:
        """One idempotent pass: finish ended jobs, then start queued ones. Thread-safe."""
        with self._pass_lock:
            self._collect_envs()
            self._reap_orphans()
            watched = self._own([JobStatus.RUNNING])
            for job in watched:
                try:
                    self._reconcile_running(job)
                except Exception:
                    log.exception("job %s: reconcile failed", job.id)
            pending = self._own([JobStatus.PENDING])
            self.idle = not watched and not pending and not self._orphans
            running = len(self._own([JobStatus.RUNNING])) if watched and pending else 0
            for job in pending:
                if running >= self.max_concurrent:
                    break
                try:
                    if self._start(job):
                        running += 1
                except Exception:
                    log.exception("job %s: start failed", job.id)

    def _collect_envs(self) -> None:
        """Remove runtime envs unused for ``env_max_age_days`` (:mod:`aicloud.executors.envrun`): at the
        first pass, then once an hour."""
        now = time.monotonic()
        if self._envs_collected_at is not None and now - self._envs_collected_at < ENV_GC_INTERVAL_S:
            return
        self._envs_collected_at = now
        try:
            for path in collect_envs(self.settings):
                log.info("runtime env %s: removed (unused for %s days)", path, self.settings.env_max_age_days)
        except OSError:
            log.exception("runtime env clean-up failed")

    def _own(self, states: list[JobStatus]) -> list[Job]:
        """Jobs in ``states`` that have processes: sweeps have none (the sweep controller drives them)."""
        return self.store.in_states(states, kinds=PROCESS_KINDS)

    # -- running jobs ------------------------------------------------------------------------

    def _poll(self, job: Job) -> ExitInfo | None:
        """Poll, turning a handle that cannot be polled (repeatedly) into ``lost``."""
        if not job.handle:
            return ExitInfo("lost")
        return poll_counted(self.executor, job.handle, self._poll_errors, job.id, log)

    def _reconcile_running(self, job: Job) -> None:
        if job.cancel_requested and job.id not in self._cancel_sent and job.handle:
            self.executor.cancel(job.handle, self.cancel_grace_s)
            self._cancel_sent.add(job.id)
        info = self._poll(job)
        if info is None or info.state == "running":
            return
        if should_restart(job, info):
            self._restart(job, info)
            return
        reason: str | None
        message: str | None
        if job.cancel_requested:
            status, reason, message = JobStatus.CANCELLED, "cancelled", None
        elif info.state == "lost":
            status, reason = JobStatus.FAILED, "lost"
            message = "the job's process disappeared (killed, or lost in a restart); its exit code is unknown"
        elif info.exit_code == 0:
            status, reason, message = JobStatus.SUCCEEDED, None, None
        else:
            status, reason = JobStatus.FAILED, "error"
            message = self.tail_log(job, MESSAGE_LINES) or f"the job exited with code {info.exit_code}"
        self._end(
            job,
            JobStatus.RUNNING,
            status=status,
            reason=reason,
            message=message,
            usage=with_cost(merge_usage(job.usage, info.usage()), job.spec, Prices.of(self.settings)),
        )
        self._cleanup(job.handle)
        self._cancel_sent.discard(job.id)
        self._poll_errors.pop(job.id, None)

    def _restart(self, job: Job, info: ExitInfo) -> None:
        """Start a failed job again (see the module docstring); a launch failure fails it."""
        message = restart_message(job, info)
        log.warning("job %s: %s; restarting", job.id, message)
        usage = merge_usage(job.usage, info.usage())
        self._cleanup(job.handle)
        self._cancel_sent.discard(job.id)
        self._poll_errors.pop(job.id, None)
        again = self.store.update(job.id, attempt=job.attempt + 1, usage=usage, message=message)
        try:
            handle = self.executor.submit(self.launcher(again))
        except Exception as exc:
            log.warning("job %s: relaunch failed: %s: %s", job.id, type(exc).__name__, exc)
            self._fail_launch(
                job,
                JobStatus.RUNNING,
                f"{message}; the restart failed: {type(exc).__name__}: {exc}",
                usage=with_cost(usage, job.spec, Prices.of(self.settings)),
            )
            return
        self.store.update(job.id, handle=handle)

    def _fail_launch(
        self, job: Job, expect: JobStatus, message: str, usage: dict[str, Any] | None = None
    ) -> Job | None:
        """Fail a job whose (re)launch raised (reason ``launch``); None if it moved on."""
        return self._end(
            job, expect, status=JobStatus.FAILED, reason="launch", message=message[:4000], usage=usage
        )

    def _end(self, job: Job, expect: JobStatus, **fields: Any) -> Job | None:
        """Wrap the job up, then move it ``expect`` → terminal with ``fields`` (compare-and-set; see
        the module docstring); the stored job, or None when it was no longer ``expect``."""
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["finished_at"] = _now()
        # the job as it is about to be stored, read again for what its launch stored (the run)
        self._finished(dataclasses.replace(self.store.get_any(job.id), **fields))
        done = self.store.transition(job.id, expect=[expect], **fields)
        if done is None:  # moved on meanwhile (a pending job cancelled): wrap it up as it ended
            self._finished(self.store.get_any(job.id))
        return done

    def _finished(self, job: Job) -> None:
        log.info("job %s %s%s", job.id, job.status.value, f" ({job.reason})" if job.reason else "")
        if self.on_finished is None:
            return
        try:
            self.on_finished(job)
        except Exception:
            log.exception("job %s: on_finished failed", job.id)

    def _cleanup(self, handle: dict[str, Any]) -> None:
        if not handle:
            return
        try:
            self.executor.cleanup(handle)
        except Exception:
            log.exception("cleanup of %r failed", handle)

    # -- pending jobs ------------------------------------------------------------------------

    def _start(self, job: Job) -> bool:
        """Launch one pending job; True when it is now running."""
        try:
            handle = self.executor.submit(self.launcher(job))
        except Exception as exc:
            log.warning("job %s: launch failed: %s: %s", job.id, type(exc).__name__, exc)
            self._fail_launch(job, JobStatus.PENDING, f"{type(exc).__name__}: {exc}")
            return False
        try:
            started = self.store.transition(
                job.id, expect=[JobStatus.PENDING], status=JobStatus.RUNNING, handle=handle, started_at=_now()
            )
        except Exception:
            self._orphan(handle)  # never leave a process the store does not know about
            raise
        if started is None:  # cancelled (or otherwise moved) while it was starting
            log.info("job %s: no longer pending; stopping the process just started", job.id)
            self._orphan(handle)
            self._finished(self.store.get_any(job.id))
            return False
        log.info("job %s running", job.id)
        return True

    def _orphan(self, handle: dict[str, Any]) -> None:
        try:
            self.executor.cancel(handle, 0.0)
        except Exception:
            log.exception("cancel of orphan %r failed", handle)
        self._orphans.append(handle)

    def _reap_orphans(self) -> None:
        still: list[dict[str, Any]] = []
        for handle in self._orphans:
            try:
                state = self.executor.poll(handle).state
            except Exception:
                state = "lost"
            if state == "running":
                still.append(handle)
            else:
                self._cleanup(handle)
        self._orphans = still

    # -- logs --------------------------------------------------------------------------------

    def tail_log(self, job: Job, n_lines: int = MESSAGE_LINES) -> str:
        """The last ``n_lines`` lines of the job's log file ("" when there is none)."""
        if not job.handle:
            return ""
        try:
            return tail_lines(self.executor.log_path(job.handle), n_lines)
        except (OSError, ValueError):
            return ""

    def read_log(self, job: Job, offset: int = 0, limit: int = 1024 * 1024) -> LogChunk:
        """Up to ``limit`` bytes of the job's log file from ``offset`` (for the logs API)."""
        data, next_offset = b"", offset
        if job.handle:
            with contextlib.suppress(OSError, ValueError):
                data, next_offset = read_log(self.executor.log_path(job.handle), offset, limit)
        return LogChunk(data, next_offset, job.status.terminal and len(data) < limit)
