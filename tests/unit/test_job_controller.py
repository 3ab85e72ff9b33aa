"""The job controller's reconcile loop, with the in-memory job store and the fake executor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aicloud.config import Settings
from aicloud.controllers.jobs import MAX_POLL_ERRORS, JobController
from aicloud.controllers.restarts import merge_usage, should_restart
from aicloud.entities import Job, JobKind, JobStatus
from aicloud.executors.base import ExitInfo, LaunchRequest
from aicloud.testing.executors import FakeExecutor
from aicloud.testing.stores import InMemoryJobStore

WS = "ws-test"


class Harness:
    """A store, a fake executor and a controller wired together, with records of the hooks."""

    def __init__(self, tmp: Path, max_concurrent: int = 2, store: InMemoryJobStore | None = None) -> None:
        self.store = store or InMemoryJobStore()
        self.executor = FakeExecutor(tmp / "logs")
        self.finished: list[Job] = []
        self.launched: list[str] = []
        self.launch_error: Exception | None = None
        settings = Settings(home=tmp / "home", max_concurrent_jobs=max_concurrent, cancel_grace_seconds=3)
        self.controller = JobController(
            self.store, self.executor, settings, self.launch, self.finished.append, interval=0.02
        )

    def launch(self, job: Job) -> LaunchRequest:
        if self.launch_error is not None:
            raise self.launch_error
        self.launched.append(job.id)
        return LaunchRequest(job_id=job.id, argv=["true"], env={}, cpus=int(job.spec.get("cpus", 1)))

    def submit(self, name: str = "job", priority: int = 0) -> Job:
        return self.store.create(workspace_id=WS, name=name, kind=JobKind.COMMAND, spec={}, priority=priority)

    def get(self, job: Job) -> Job:
        return self.store.get_any(job.id)

    def status(self, job: Job) -> JobStatus:
        return self.get(job).status

    def finished_ids(self) -> list[str]:
        return [j.id for j in self.finished]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_starts_in_queue_order_up_to_max_concurrency(h: Harness) -> None:
    jobs = [h.submit(f"j{i}") for i in range(5)]
    h.controller.reconcile_once()
    assert h.launched == [jobs[0].id, jobs[1].id]
    assert [h.status(j) for j in jobs] == [JobStatus.RUNNING] * 2 + [JobStatus.PENDING] * 3
    started = h.get(jobs[0])
    assert started.handle == {"executor": "fake", "fake_job": jobs[0].id}
    assert started.started_at is not None

    h.controller.reconcile_once()  # idempotent: nothing more starts while both still run
    assert h.launched == [jobs[0].id, jobs[1].id]

    h.executor.finish(jobs[1].id, 0)
    h.controller.reconcile_once()
    assert h.status(jobs[1]) is JobStatus.SUCCEEDED
    assert h.launched == [jobs[0].id, jobs[1].id, jobs[2].id]
    assert h.executor.max_running_seen == 2


def test_priority_before_fifo(h: Harness) -> None:
    low = h.submit("low")
    mid = h.submit("mid", priority=5)
    high = h.submit("high", priority=10)
    low2 = h.submit("low2")
    h.controller.max_concurrent = 1
    order = []
    for _ in range(4):
        h.controller.reconcile_once()
        current = h.executor.running_ids()
        assert len(current) == 1
        order.append(current[0])
        h.executor.finish(current[0], 0)
    assert order == [high.id, mid.id, low.id, low2.id]


def test_success_and_failure_transitions_with_usage_and_message(h: Harness) -> None:
    ok, bad = h.submit("ok"), h.submit("bad")
    h.controller.reconcile_once()
    h.executor.finish(ok.id, 0, log="all good\n")
    lines = "".join(f"line {i}\n" for i in range(80))
    h.executor.finish(bad.id, 3, log=lines)
    h.controller.reconcile_once()

    done = h.get(ok)
    assert done.status is JobStatus.SUCCEEDED and done.reason is None and done.finished_at is not None
    measured = {"exit_code": 0, "cpu_seconds": 0.5, "peak_rss_bytes": 1 << 20, "wall_seconds": 1.0}
    assert done.usage.items() >= measured.items() and done.usage["cost"] == 0.0  # priced: see test_cost

    failed = h.get(bad)
    assert failed.status is JobStatus.FAILED and failed.reason == "error"
    assert failed.usage["exit_code"] == 3
    assert failed.message is not None
    message_lines = failed.message.splitlines()
    assert message_lines == [f"line {i}" for i in range(30, 80)]  # the last 50 lines
    assert h.executor.jobs[ok.id].cleanups == 1 and h.executor.jobs[bad.id].cleanups == 1


def test_failure_without_log_says_the_exit_code(h: Harness) -> None:
    job = h.submit()
    h.controller.reconcile_once()
    h.executor.finish(job.id, 7)
    h.controller.reconcile_once()
    assert h.get(job).message == "the job exited with code 7"


def test_cancel_running_job(h: Harness) -> None:
    job = h.submit()
    h.controller.reconcile_once()
    h.store.request_cancel(WS, job.id)
    h.controller.reconcile_once()
    done = h.get(job)
    assert done.status is JobStatus.CANCELLED and done.reason == "cancelled"
    assert h.executor.jobs[job.id].cancels == [3.0]  # the settings' grace
    assert done.usage["exit_code"] == -15


def test_cancel_is_sent_once_while_the_job_takes_its_time(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.executor.cancel_ends_job = False
    job = h.submit()
    h.controller.reconcile_once()
    h.store.request_cancel(WS, job.id)
    for _ in range(3):
        h.controller.reconcile_once()
    assert h.executor.jobs[job.id].cancels == [3.0]
    assert h.status(job) is JobStatus.RUNNING
    h.executor.finish(job.id, 0)  # even a clean exit after a cancel request is a cancel
    h.controller.reconcile_once()
    assert h.status(job) is JobStatus.CANCELLED
    assert h.finished_ids() == [job.id]


def test_pending_cancel_never_launches(h: Harness) -> None:
    job = h.submit()
    h.store.request_cancel(WS, job.id)
    h.controller.reconcile_once()
    assert h.status(job) is JobStatus.CANCELLED
    assert h.launched == [] and h.executor.submitted == []


def test_cancel_racing_the_start_stops_the_new_process(h: Harness) -> None:
    job = h.submit()
    original = h.launch

    def launch_then_cancel(j: Job) -> LaunchRequest:
        req = original(j)
        h.store.request_cancel(WS, j.id)  # the user cancels while the job starts
        return req

    h.controller.launcher = launch_then_cancel
    h.controller.reconcile_once()
    assert h.status(job) is JobStatus.CANCELLED
    fake = h.executor.jobs[job.id]
    assert fake.cancels == [0.0]
    h.controller.reconcile_once()  # the orphan is reaped once it has ended
    assert fake.cleanups == 1
    assert h.finished_ids() == [job.id]  # so the server can revoke what its launcher made


def test_launch_failure_fails_the_job_and_the_pass_goes_on(h: Harness) -> None:
    bad, good = h.submit("bad"), h.submit("good")
    h.executor.fail_submit = {bad.id}
    h.controller.reconcile_once()
    failed = h.get(bad)
    assert failed.status is JobStatus.FAILED and failed.reason == "launch"
    assert failed.message is not None and "fake submit failure" in failed.message
    assert h.status(good) is JobStatus.RUNNING
    assert h.finished_ids() == [bad.id]


def test_launcher_exception_fails_the_job(h: Harness) -> None:
    job = h.submit()
    h.launch_error = ValueError("no such secret")
    h.controller.reconcile_once()
    failed = h.get(job)
    assert failed.status is JobStatus.FAILED and failed.reason == "launch"
    assert failed.message == "ValueError: no such secret"


def test_lost_job_fails_with_reason_lost(h: Harness) -> None:
    job = h.submit()
    h.controller.reconcile_once()
    h.executor.lose(job.id)
    h.controller.reconcile_once()
    lost = h.get(job)
    assert lost.status is JobStatus.FAILED and lost.reason == "lost"
    assert h.executor.jobs[job.id].cleanups == 1


def test_reattach_after_restart(tmp_path: Path) -> None:
    """A new controller over the same store and executor picks running jobs up by handle."""
    first = Harness(tmp_path)
    alive, gone = first.submit("alive"), first.submit("gone")
    first.controller.reconcile_once()
    second = JobController(
        first.store, first.executor, first.controller.settings, first.launch, first.finished.append
    )
    first.executor.lose(gone.id)
    second.reconcile_once()
    assert first.status(gone) is JobStatus.FAILED and first.get(gone).reason == "lost"
    assert first.status(alive) is JobStatus.RUNNING
    first.executor.finish(alive.id, 0)
    second.reconcile_once()
    assert first.status(alive) is JobStatus.SUCCEEDED


def test_running_job_without_a_handle_is_lost(h: Harness) -> None:
    job = h.submit()
    h.store.transition(job.id, expect=[JobStatus.PENDING], status=JobStatus.RUNNING)
    h.controller.reconcile_once()
    assert h.get(job).reason == "lost"


def test_unpollable_handle_becomes_lost_after_repeated_errors(h: Harness) -> None:
    job = h.submit()
    h.controller.reconcile_once()
    h.executor.fail_poll = True
    for _ in range(MAX_POLL_ERRORS - 1):
        h.controller.reconcile_once()
    assert h.status(job) is JobStatus.RUNNING
    h.controller.reconcile_once()
    assert h.status(job) is JobStatus.FAILED and h.get(job).reason == "lost"


def test_on_finished_called_exactly_once_per_job(h: Harness) -> None:
    jobs = [h.submit(f"j{i}") for i in range(4)]
    h.controller.reconcile_once()
    for job in jobs[:2]:
        h.executor.finish(job.id, 0)
    for _ in range(3):
        h.controller.reconcile_once()
    h.executor.finish(jobs[2].id, 1)
    h.executor.lose(jobs[3].id)
    for _ in range(3):
        h.controller.reconcile_once()
    assert sorted(h.finished_ids()) == sorted(j.id for j in jobs)
    assert all(j.status.terminal for j in h.finished)


def test_a_job_turns_terminal_only_after_its_wrap_up(h: Harness) -> None:
    """on_finished gets the job as it is about to be stored while the store still has it running
    (or pending): whoever sees the job ended (job.wait()) finds its log kept and its run closed."""
    seen: list[tuple[str, JobStatus, str | None, JobStatus]] = []
    h.controller.on_finished = lambda job: seen.append((job.id, job.status, job.reason, h.status(job)))
    ok, bad, lost, unlaunched = (h.submit(n) for n in ("ok", "bad", "lost", "unlaunched"))
    h.executor.fail_submit = {unlaunched.id}
    h.controller.max_concurrent = 4
    h.controller.reconcile_once()
    h.executor.finish(ok.id, 0)
    h.executor.finish(bad.id, 2)
    h.executor.lose(lost.id)
    h.controller.reconcile_once()
    assert sorted(seen) == sorted(
        [
            (ok.id, JobStatus.SUCCEEDED, None, JobStatus.RUNNING),
            (bad.id, JobStatus.FAILED, "error", JobStatus.RUNNING),
            (lost.id, JobStatus.FAILED, "lost", JobStatus.RUNNING),
            (unlaunched.id, JobStatus.FAILED, "launch", JobStatus.PENDING),
        ]
    )
    assert [h.status(j) for j in (ok, bad, lost, unlaunched)] == [
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.FAILED,
        JobStatus.FAILED,
    ]


class ControlPlaneDied(BaseException):
    """The control plane stops in the middle of a pass (not an error the loop would catch)."""


def test_a_wrap_up_cut_short_by_a_restart_is_done_again_then_the_job_ends(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    job = h.submit()
    h.controller.reconcile_once()
    h.executor.finish(job.id, 0)

    def die(_job: Job) -> None:
        raise ControlPlaneDied

    h.controller.on_finished = die
    with pytest.raises(ControlPlaneDied):
        h.controller.reconcile_once()
    assert h.status(job) is JobStatus.RUNNING  # not ended: its wrap-up did not finish

    again = Harness(tmp_path, store=h.store)  # a new control plane over the same store
    again.executor = h.executor
    again.controller.executor = h.executor
    again.controller.reconcile_once()
    assert h.status(job) is JobStatus.SUCCEEDED and again.finished_ids() == [job.id]


def test_on_finished_error_does_not_stop_cleanup(h: Harness) -> None:
    def boom(job: Job) -> None:
        raise RuntimeError("blob store down")

    h.controller.on_finished = boom
    job = h.submit()
    h.controller.reconcile_once()
    h.executor.finish(job.id, 0)
    h.controller.reconcile_once()
    assert h.status(job) is JobStatus.SUCCEEDED
    assert h.executor.jobs[job.id].cleanups == 1


class FlakyStore(InMemoryJobStore):
    """Fails ``in_states`` on demand, as a database that went away would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def in_states(self, states: list[JobStatus], *, kinds: list[JobKind] | None = None) -> list[Job]:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("database is locked")
        return super().in_states(states, kinds=kinds)


@pytest.fixture
def looping(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, store=FlakyStore())
    h.controller.start()
    yield h
    h.controller.stop()
    assert not h.controller.running


def test_loop_survives_store_errors_and_runs_jobs(looping: Harness) -> None:
    store = looping.store
    assert isinstance(store, FlakyStore)
    store.failures = 3
    job = looping.submit()
    looping.controller.wake()
    wait_for(lambda: looping.status(job) is JobStatus.RUNNING)
    assert looping.controller.running
    looping.executor.finish(job.id, 0)
    wait_for(lambda: looping.status(job) is JobStatus.SUCCEEDED)


def test_wake_runs_a_pass_without_waiting_for_the_tick(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.controller.interval = 30.0
    h.controller.start()
    try:
        time.sleep(0.05)  # the first pass has run; the loop now sleeps for 30 s
        job = h.submit()
        h.controller.wake()
        wait_for(lambda: h.status(job) is JobStatus.RUNNING, timeout=2.0)
    finally:
        h.controller.stop()


def test_an_idle_loop_ticks_slowly_and_a_busy_one_at_its_interval(tmp_path: Path) -> None:
    passes: list[float] = []
    h = Harness(tmp_path)
    original = h.controller.reconcile_once

    def counted() -> None:
        passes.append(time.monotonic())
        original()

    h.controller.reconcile_once = counted  # type: ignore[method-assign]
    h.controller.interval = 0.01
    h.controller.idle_interval = 30.0
    h.controller.start()
    try:
        time.sleep(0.3)  # nothing pending or running: one pass, then the idle wait
        assert len(passes) == 1 and h.controller.idle
        job = h.submit()
        h.controller.wake()
        wait_for(lambda: h.status(job) is JobStatus.RUNNING, timeout=2.0)
        seen = len(passes)
        time.sleep(0.3)  # a running job is watched every interval
        assert len(passes) >= seen + 5 and not h.controller.idle
        h.executor.finish(job.id, 0)
        wait_for(lambda: h.status(job) is JobStatus.SUCCEEDED, timeout=2.0)
        wait_for(lambda: h.controller.idle, timeout=2.0)
        settled = len(passes)
        time.sleep(0.3)
        assert len(passes) <= settled + 1
    finally:
        h.controller.stop()


def test_concurrent_reconcile_calls_never_exceed_the_limit(h: Harness) -> None:
    for i in range(10):
        h.submit(f"j{i}")
    threads = [threading.Thread(target=h.controller.reconcile_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(h.executor.running_ids()) == 2 and h.executor.max_running_seen == 2


def test_log_helpers(h: Harness) -> None:
    job = h.submit()
    assert h.controller.tail_log(job) == "" and h.controller.read_log(job).data == b""
    h.controller.reconcile_once()
    h.executor.finish(job.id, 1, log="a\nb\nc\n")
    running = h.get(job)
    assert h.controller.tail_log(running, 2) == "b\nc"
    chunk = h.controller.read_log(running, 2, limit=2)
    assert (chunk.data, chunk.next_offset, chunk.complete) == (b"b\n", 4, False)
    h.controller.reconcile_once()
    ended = h.get(job)
    chunk = h.controller.read_log(ended, 4)
    assert (chunk.data, chunk.next_offset, chunk.complete) == (b"c\n", 6, True)


# -- restarts (max_restarts) ---------------------------------------------------------------


def _restartable(h: Harness, max_restarts: int) -> Job:
    return h.store.create(
        workspace_id=WS, name="again", kind=JobKind.TRAIN, spec={"max_restarts": max_restarts}
    )


@pytest.mark.parametrize(
    ("attempt", "allowed", "info", "cancel", "expected"),
    [
        (0, 1, ExitInfo("exited", 1), False, True),
        (0, 1, ExitInfo("exited", -9), False, True),
        (0, 1, ExitInfo("lost"), False, True),
        (1, 1, ExitInfo("exited", 1), False, False),  # no restarts left
        (0, 0, ExitInfo("exited", 1), False, False),  # none allowed
        (0, 1, ExitInfo("exited", 0), False, False),  # it succeeded
        (0, 1, ExitInfo("running"), False, False),
        (0, 3, ExitInfo("exited", -15), True, False),  # cancelled: never restarted
    ],
)
def test_restart_policy(attempt: int, allowed: int, info: ExitInfo, cancel: bool, expected: bool) -> None:
    job = Job(
        id="job_x",
        workspace_id=WS,
        name="j",
        kind=JobKind.TRAIN,
        spec={"max_restarts": allowed},
        status=JobStatus.RUNNING,
        priority=0,
        created_at=datetime.now(UTC),
        cancel_requested=cancel,
        attempt=attempt,
    )
    assert should_restart(job, info) is expected


def test_merge_usage_adds_up_attempts() -> None:
    first = {"exit_code": -9, "cpu_seconds": 2.0, "peak_rss_bytes": 300, "wall_seconds": 5.0}
    second = {"exit_code": 0, "cpu_seconds": 1.5, "peak_rss_bytes": 200, "wall_seconds": 4.0}
    assert merge_usage({}, second) == second
    assert merge_usage(first, second) == {
        "exit_code": 0,
        "cpu_seconds": 3.5,
        "peak_rss_bytes": 300,
        "wall_seconds": 9.0,
    }


def test_failed_job_is_restarted_then_fails_when_out_of_restarts(h: Harness) -> None:
    job = _restartable(h, 1)
    h.controller.reconcile_once()
    h.executor.finish(job.id, -9)  # e.g. a worker killed with kill -9
    h.controller.reconcile_once()
    again = h.get(job)
    assert again.status is JobStatus.RUNNING and again.attempt == 1
    assert again.message == "restart 1 of 1: attempt 0 exited with code -9"
    assert h.executor.submitted == [job.id, job.id] and h.launched == [job.id, job.id]
    assert again.usage["cpu_seconds"] == 0.5  # the first attempt's, kept

    h.executor.finish(job.id, 1, log="boom\n")
    h.controller.reconcile_once()
    done = h.get(job)
    assert done.status is JobStatus.FAILED and done.reason == "error" and done.attempt == 1
    assert done.usage["cpu_seconds"] == 1.0 and done.usage["wall_seconds"] == 2.0  # both attempts
    assert h.finished_ids() == [job.id]  # on_finished once, at the very end


def test_restarted_job_can_succeed_and_lost_jobs_restart(h: Harness) -> None:
    job = _restartable(h, 2)
    h.controller.reconcile_once()
    h.executor.lose(job.id)
    h.controller.reconcile_once()
    assert h.get(job).attempt == 1 and "was lost" in (h.get(job).message or "")
    h.executor.finish(job.id, 0)
    h.controller.reconcile_once()
    done = h.get(job)
    assert done.status is JobStatus.SUCCEEDED and done.attempt == 1


def test_cancelled_job_is_not_restarted(h: Harness) -> None:
    job = _restartable(h, 3)
    h.controller.reconcile_once()
    h.store.request_cancel(WS, job.id)
    h.controller.reconcile_once()
    done = h.get(job)
    assert done.status is JobStatus.CANCELLED and done.attempt == 0
    assert h.executor.submitted == [job.id]


def test_a_failed_relaunch_fails_the_job(h: Harness) -> None:
    job = _restartable(h, 1)
    h.controller.reconcile_once()
    h.executor.fail_submit = True
    h.executor.finish(job.id, 2)
    h.controller.reconcile_once()
    done = h.get(job)
    assert done.status is JobStatus.FAILED and done.reason == "launch"
    assert "restart failed" in (done.message or "") and h.finished_ids() == [job.id]
