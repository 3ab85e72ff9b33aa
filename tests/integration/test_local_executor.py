"""The local executor with real processes: logs, caps, cancellation, re-attachment, and the
job controller end to end on top of it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from aicloud.config import Settings
from aicloud.controllers.jobs import JobController
from aicloud.entities import Job, JobKind, JobStatus
from aicloud.executors import ExitInfo, LaunchError, LaunchRequest, LocalExecutor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

PY = sys.executable
SH = "/bin/sh"
MiB = 1024 * 1024


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "jobs"


@pytest.fixture
def ex(jobs_dir: Path) -> Iterator[LocalExecutor]:
    executor = LocalExecutor(jobs_dir, max_log_bytes=MiB, default_grace_s=5)
    yield executor
    # Leave nothing running behind a failed test.
    for job_dir in jobs_dir.glob("*"):
        child = json.loads((job_dir / "child.json").read_text()) if (job_dir / "child.json").exists() else {}
        for worker in child.get("workers") or ([child] if child else []):
            kill_group(worker["pgid"])


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def submit(ex: LocalExecutor, job_id: str, argv: list[str], **kwargs: Any) -> dict[str, Any]:
    return ex.submit(LaunchRequest(job_id=job_id, argv=argv, env=kwargs.pop("env", env()), **kwargs))


def wait_end(ex: LocalExecutor, handle: dict[str, Any], timeout: float = 20.0) -> ExitInfo:
    deadline = time.monotonic() + timeout
    while (info := ex.poll(handle)).state == "running":
        assert time.monotonic() < deadline, f"job still running after {timeout}s"
        time.sleep(0.02)
    return info


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    members = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        with contextlib.suppress(ProcessLookupError):  # ended since the listing
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


def child_pgid(handle: dict[str, Any]) -> int:
    path = Path(handle["job_dir"]) / "child.json"
    wait_for(path.exists)
    return int(json.loads(path.read_text())["pgid"])


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def test_exit_codes_and_usage(ex: LocalExecutor) -> None:
    ok = submit(ex, "ok", [PY, "-c", "b = b'x' * (80 * 1024 * 1024); print(len(b))"])
    bad = submit(ex, "bad", [PY, "-c", "import sys; sys.exit(3)"])
    killed = submit(ex, "killed", [SH, "-c", "kill -KILL $$"])
    missing = submit(ex, "missing", ["/no/such/program"])
    info = wait_end(ex, ok)
    assert info.exit_code == 0
    assert info.peak_rss_bytes is not None and info.peak_rss_bytes >= 80 * MiB
    assert info.cpu_seconds is not None and info.cpu_seconds > 0
    assert info.wall_seconds is not None and info.wall_seconds > 0
    assert wait_end(ex, bad).exit_code == 3
    assert wait_end(ex, killed).exit_code == -signal.SIGKILL
    assert wait_end(ex, missing).exit_code == 127
    assert "could not start '/no/such/program'" in ex.log_path(missing).read_text()
    for handle in (ok, bad, killed, missing):
        ex.cleanup(handle)


def test_log_captures_stdout_and_stderr_live(ex: LocalExecutor) -> None:
    code = (
        "import sys, time\n"
        "print('out line', flush=True)\n"
        "print('err line', file=sys.stderr, flush=True)\n"
        "time.sleep(30)\n"
    )
    handle = submit(ex, "logs", [PY, "-c", code])
    log = ex.log_path(handle)
    assert log == Path(handle["job_dir"]) / "job.log"
    wait_for(lambda: log.exists() and "err line" in log.read_text())  # visible while it runs
    assert ex.poll(handle).state == "running"
    assert log.read_text() == "out line\nerr line\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(handle["job_dir"]).stat().st_mode) == 0o700
    ex.cancel(handle, 1)
    assert wait_end(ex, handle).exit_code == -signal.SIGTERM
    ex.cleanup(handle)


def test_log_cap_drops_the_excess_with_flat_memory(ex: LocalExecutor) -> None:
    total = 200 * MiB
    code = (
        "import sys\n"
        "chunk = b'y' * 65535 + b'\\n'\n"
        f"for _ in range({total // 65536}): sys.stdout.buffer.write(chunk)\n"
    )
    before = rss_bytes()
    started = time.monotonic()
    handle = submit(ex, "flood", [PY, "-c", code])
    info = wait_end(ex, handle, timeout=120)
    elapsed = time.monotonic() - started
    assert info.exit_code == 0
    marker = f"[aicloud: log truncated at {MiB} bytes; {total - MiB} more bytes dropped]\n"
    log = ex.log_path(handle)
    assert log.stat().st_size == MiB + len(marker)
    with open(log, "rb") as f:
        f.seek(MiB)
        assert f.read().decode() == marker  # the cap falls on a line end: no extra newline
    assert rss_bytes() - before < 30 * MiB
    assert elapsed < 60
    ex.cleanup(handle)


def test_log_marker_starts_on_its_own_line(jobs_dir: Path) -> None:
    ex = LocalExecutor(jobs_dir, max_log_bytes=1000)
    handle = submit(ex, "partial", [PY, "-c", "print('z' * 1500, end='')"])
    assert wait_end(ex, handle).exit_code == 0
    text = ex.log_path(handle).read_text()
    assert text == "z" * 1000 + "\n[aicloud: log truncated at 1000 bytes; 500 more bytes dropped]\n"
    ex.cleanup(handle)


def test_cancel_kills_the_process_and_its_children(ex: LocalExecutor) -> None:
    handle = submit(ex, "tree", [SH, "-c", "sleep 1000 & sleep 1000 & wait"])
    pgid = child_pgid(handle)
    wait_for(lambda: len(group_members(pgid)) == 3)  # sh and two sleeps
    started = time.monotonic()
    ex.cancel(handle, 5)
    info = wait_end(ex, handle)
    assert time.monotonic() - started < 5  # they obey SIGTERM: no need to wait for the grace
    assert info.exit_code == -signal.SIGTERM
    assert group_members(pgid) == []
    wait_for(lambda: group_members(handle["pid"]) == [])  # the supervisor has gone too
    ex.cancel(handle, 5)  # idempotent, also after the end
    ex.cleanup(handle)


def test_sigterm_ignoring_job_is_killed_after_the_grace(ex: LocalExecutor) -> None:
    code = (
        "import signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen(['sleep', '1000'])\n"  # a child that dies with the group
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    handle = submit(ex, "stubborn", [PY, "-c", code])
    pgid = child_pgid(handle)
    wait_for(lambda: "ready" in ex.log_path(handle).read_text())
    started = time.monotonic()
    ex.cancel(handle, 1.0)
    time.sleep(0.5)
    assert ex.poll(handle).state == "running"  # still in its grace period
    info = wait_end(ex, handle)
    assert 0.9 < time.monotonic() - started < 5
    assert info.exit_code == -signal.SIGKILL
    assert group_members(pgid) == []
    ex.cleanup(handle)


def test_thread_limits_and_working_folder(ex: LocalExecutor) -> None:
    code = (
        "import json, os\n"
        "keys = ['OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'AICLOUD_CPUS',\n"
        "        'AICLOUD_WORKDIR', 'AICLOUD_OUTPUT_DIR', 'FROM_CALLER']\n"
        "print(json.dumps({'env': {k: os.environ.get(k) for k in keys}, 'cwd': os.getcwd()}))\n"
        "os.makedirs('data/locked'); open('data/locked/f.csv', 'w').close(); os.chmod('data/locked', 0o500)\n"
        "os.chmod('data', 0)\n"
        "open(os.path.join(os.environ['AICLOUD_OUTPUT_DIR'], 'model.bin'), 'w').close()\n"
    )
    handle = submit(ex, "envjob", [PY, "-c", code], env=env(FROM_CALLER="1", MKL_NUM_THREADS="7"), cpus=3)
    assert wait_end(ex, handle).exit_code == 0
    seen = json.loads(ex.log_path(handle).read_text())
    workdir = Path(handle["workdir"])
    assert seen["cwd"] == str(workdir)
    assert seen["env"] == {
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "7",  # the caller's value wins
        "OPENBLAS_NUM_THREADS": "3",
        "AICLOUD_CPUS": "3",
        "AICLOUD_WORKDIR": str(workdir),
        "AICLOUD_OUTPUT_DIR": str(workdir / "output"),
        "FROM_CALLER": "1",
    }
    assert workdir.name.startswith("aicloud-job-envjob-")
    assert not workdir.is_relative_to(ex.jobs_dir.parent)  # never under AICLOUD_HOME
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    ex.cleanup(handle)
    assert not workdir.exists()
    ex.cleanup(handle)  # idempotent


def test_caller_cwd_is_used_and_kept(ex: LocalExecutor, tmp_path: Path) -> None:
    cwd = tmp_path / "mine"
    cwd.mkdir()
    handle = submit(ex, "cwdjob", [PY, "-c", "import os; print(os.getcwd())"], cwd=str(cwd))
    assert wait_end(ex, handle).exit_code == 0
    assert ex.log_path(handle).read_text().strip() == str(cwd)
    ex.cleanup(handle)
    assert cwd.is_dir()


def test_reattach_from_a_new_executor(jobs_dir: Path) -> None:
    first = LocalExecutor(jobs_dir)
    handle = json.loads(json.dumps(submit(first, "reattach", [PY, "-c", "import time; time.sleep(1.5)"])))
    del first  # the control plane goes away; the job does not
    second = LocalExecutor(jobs_dir)
    assert second.poll(handle).state == "running"
    info = wait_end(second, handle)
    assert info.state == "exited" and info.exit_code == 0
    second.cleanup(handle)


def test_a_handle_knows_its_supervisor_by_pid_and_start_time(ex: LocalExecutor) -> None:
    """The handle's start time is field 22 of ``/proc/<pid>/stat`` (clock ticks since boot), the
    unit of handles written before the executor read processes with psutil; a handle whose start
    time differs (the pid was reused) is not that supervisor."""
    handle = submit(ex, "who", [SH, "-c", "sleep 1000"])
    stat = Path(f"/proc/{handle['pid']}/stat").read_bytes()
    assert handle["start_time"] == int(stat[stat.rfind(b")") + 2 :].split()[19])
    assert ex.poll(handle).state == "running"
    assert ex.poll({**handle, "start_time": handle["start_time"] - 1}).state == "lost"
    ex.cancel(handle, 0.0)
    assert wait_end(ex, handle).state == "exited"
    ex.cleanup(handle)


def test_killed_supervisor_is_lost(ex: LocalExecutor) -> None:
    handle = submit(ex, "victim", [SH, "-c", "sleep 1000"])
    pgid = child_pgid(handle)
    os.kill(handle["pid"], signal.SIGKILL)
    kill_group(pgid)
    info = wait_end(ex, handle)
    assert info.state == "lost" and info.exit_code is None
    ex.cleanup(handle)


def test_killed_supervisor_after_a_cancel_is_an_exit_by_sigkill(ex: LocalExecutor) -> None:
    handle = submit(ex, "victim2", [SH, "-c", "trap '' TERM; sleep 1000"])
    pgid = child_pgid(handle)
    ex.cancel(handle, 30)
    os.kill(handle["pid"], signal.SIGKILL)  # e.g. the OOM killer, mid-grace
    info = wait_end(ex, handle)
    assert (info.state, info.exit_code) == ("exited", -signal.SIGKILL)
    assert group_members(pgid) != []  # orphaned: cleanup kills what is left
    ex.cleanup(handle)
    wait_for(lambda: group_members(pgid) == [])


def test_escaped_descendant_does_not_hold_the_job_open(ex: LocalExecutor) -> None:
    # The sleep leaves the job's process group (and session) and keeps the log pipe open.
    handle = submit(ex, "escape", [SH, "-c", "setsid sleep 30 & echo $!; sleep 0.5"])
    started = time.monotonic()
    info = wait_end(ex, handle, timeout=10)
    assert info.exit_code == 0
    assert time.monotonic() - started < 5  # the supervisor drains for 2 s at most, then ends
    escaped = int(ex.log_path(handle).read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(escaped, signal.SIGKILL)
    ex.cleanup(handle)


def test_bad_requests_are_launch_errors(ex: LocalExecutor) -> None:
    with pytest.raises(LaunchError):
        submit(ex, "../evil", [PY, "-c", "pass"])
    with pytest.raises(LaunchError):
        submit(ex, "empty", [])
    with pytest.raises(LaunchError):
        submit(ex, "nocpu", [PY, "-c", "pass"], cpus=0)


WORKER = (
    "import json, os, sys, time\n"
    "keys = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT']\n"
    "print(json.dumps({k: os.environ.get(k) for k in keys}), flush=True)\n"
    "b = b'x' * (40 * 1024 * 1024)\n"
    "print('half', end='', flush=True); time.sleep(0.2); print(' line', flush=True)\n"
    "rank = int(os.environ['RANK'])\n"
    "if os.environ.get('FAIL_RANK') == str(rank): time.sleep(0.5); sys.exit(5)\n"
    "time.sleep(float(os.environ.get('SLEEP', '0')))\n"
)


def test_workers_get_ranks_and_share_one_rendezvous(ex: LocalExecutor) -> None:
    handle = submit(ex, "three", [PY, "-c", WORKER], workers=3)
    info = wait_end(ex, handle)
    assert info.exit_code == 0
    lines = ex.log_path(handle).read_text().splitlines()
    seen = {}
    for line in lines:
        prefix, _, rest = line.rpartition("] ") if line.startswith("[rank") else ("", "", line)
        if rest.startswith("{"):
            env = json.loads(rest)
            seen[int(env["RANK"])] = env
            assert prefix == ("" if env["RANK"] == "0" else f"[rank {env['RANK']}")
    assert sorted(seen) == [0, 1, 2]
    assert {e["WORLD_SIZE"] for e in seen.values()} == {"3"} == {e["LOCAL_WORLD_SIZE"] for e in seen.values()}
    assert {e["MASTER_ADDR"] for e in seen.values()} == {"127.0.0.1"}
    assert len({e["MASTER_PORT"] for e in seen.values()}) == 1
    assert [e["LOCAL_RANK"] for _, e in sorted(seen.items())] == ["0", "1", "2"]
    # whole lines: a worker's half-written line is never split by another's output
    assert sorted(line for line in lines if "line" in line) == [
        "[rank 1] half line",
        "[rank 2] half line",
        "half line",
    ]
    assert info.peak_rss_bytes is not None and info.peak_rss_bytes >= 3 * 40 * MiB  # the sum of the peaks
    record = json.loads((Path(handle["job_dir"]) / "exit.json").read_text())
    assert record["workers"] == 3 and record["failed_rank"] is None
    ex.cleanup(handle)


def test_first_failed_worker_fails_the_job_and_stops_the_others(ex: LocalExecutor) -> None:
    handle = submit(ex, "failing", [PY, "-c", WORKER], workers=2, env=env(FAIL_RANK="1", SLEEP="600"))
    started = time.monotonic()
    info = wait_end(ex, handle, timeout=30)
    assert info.exit_code == 5 and time.monotonic() - started < 10  # rank 0 was stopped with SIGTERM
    record = json.loads((Path(handle["job_dir"]) / "exit.json").read_text())
    assert record["failed_rank"] == 1
    ex.cleanup(handle)


def test_cancel_stops_every_worker(ex: LocalExecutor) -> None:
    handle = submit(ex, "cancel-all", [SH, "-c", "trap '' TERM; sleep 1000 & wait"], workers=2)
    path = Path(handle["job_dir"]) / "child.json"
    wait_for(path.exists)
    groups = [w["pgid"] for w in json.loads(path.read_text())["workers"]]
    assert len(groups) == 2
    wait_for(lambda: all(len(group_members(g)) == 2 for g in groups))
    ex.cancel(handle, 0.5)  # they ignore SIGTERM: SIGKILL after the grace
    info = wait_end(ex, handle)
    assert info.exit_code == -signal.SIGKILL
    assert all(group_members(g) == [] for g in groups)
    ex.cleanup(handle)


def test_a_restart_appends_to_the_log(ex: LocalExecutor) -> None:
    first = submit(ex, "again", [SH, "-c", "echo attempt one; exit 1"])
    assert wait_end(ex, first).exit_code == 1
    ex.cleanup(first)
    second = submit(ex, "again", [SH, "-c", "echo attempt two"])
    assert wait_end(ex, second).exit_code == 0
    assert ex.log_path(second).read_text() == "attempt one\nattempt two\n"
    ex.cleanup(second)


def test_gpu_requests_beyond_the_machine_are_launch_errors(ex: LocalExecutor) -> None:
    with pytest.raises(LaunchError, match="GPU"):
        submit(ex, "gpus", [PY, "-c", "pass"], workers=2, gpus=64)
    with pytest.raises(LaunchError):
        submit(ex, "noworkers", [PY, "-c", "pass"], workers=0)


def test_controller_end_to_end(jobs_dir: Path, tmp_path: Path) -> None:
    from aicloud.testing.stores import InMemoryJobStore

    store = InMemoryJobStore()
    executor = LocalExecutor(jobs_dir, max_log_bytes=MiB)
    settings = Settings(home=tmp_path / "home", max_concurrent_jobs=2, cancel_grace_seconds=2)
    finished: list[Job] = []

    def launcher(job: Job) -> LaunchRequest:
        code = f"import time; print('job {job.name}'); time.sleep({job.spec['sleep']})"
        return LaunchRequest(job_id=job.id, argv=[PY, "-c", code], env=env(), cpus=1)

    controller = JobController(store, executor, settings, launcher, finished.append, interval=0.05)
    jobs = [
        store.create(workspace_id="ws", name=f"j{i}", kind=JobKind.COMMAND, spec={"sleep": 0.4})
        for i in range(3)
    ]
    max_running = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal max_running
        while not stop.is_set():
            max_running = max(max_running, len(store.in_states([JobStatus.RUNNING])))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    controller.start()
    try:
        wait_for(lambda: all(store.get_any(j.id).status.terminal for j in jobs), timeout=60)
    finally:
        controller.stop()
        stop.set()
        watcher.join()
    assert max_running == 2
    for job in jobs:
        done = store.get_any(job.id)
        assert done.status is JobStatus.SUCCEEDED, done
        assert done.usage["exit_code"] == 0 and done.usage["wall_seconds"] >= 0.4
        assert controller.tail_log(done) == f"job {job.name}"
        assert not Path(done.handle["workdir"]).exists()  # cleaned up
    assert sorted(j.id for j in finished) == sorted(j.id for j in jobs)


def test_controller_cancels_a_real_job(jobs_dir: Path, tmp_path: Path) -> None:
    from aicloud.testing.stores import InMemoryJobStore

    store = InMemoryJobStore()
    executor = LocalExecutor(jobs_dir)
    settings = Settings(home=tmp_path / "home", max_concurrent_jobs=1, cancel_grace_seconds=1)

    def launcher(job: Job) -> LaunchRequest:
        return LaunchRequest(job_id=job.id, argv=[SH, "-c", "echo started; sleep 1000"], env=env())

    controller = JobController(store, executor, settings, launcher)
    job = store.create(workspace_id="ws", name="long", kind=JobKind.COMMAND, spec={})
    controller.reconcile_once()
    running = store.get_any(job.id)
    assert running.status is JobStatus.RUNNING
    wait_for(lambda: controller.tail_log(running) == "started")
    store.request_cancel("ws", job.id)

    def ended() -> bool:
        controller.reconcile_once()
        return store.get_any(job.id).status.terminal

    wait_for(ended)
    done = store.get_any(job.id)
    assert done.status is JobStatus.CANCELLED and done.usage["exit_code"] == -signal.SIGTERM
