"""The SQL stores of jobs, runs, the model registry and blob ownership, on SQLite and PostgreSQL.

Every test taking ``store`` or ``store_url`` runs once per backend. Tests taking ``tracking``
(the job and run contracts) also run against the in-memory fakes of ``aicloud.testing.stores``,
which the job controller's unit tests use: the fakes must keep the same semantics.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from alembic import command
from sqlalchemy import inspect

from aicloud.entities import BlobOwner, Job, JobKind, JobStatus, MetricPoint, Role, RunStatus
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store import MetadataStore, open_store
from aicloud.store.sql import migrate
from aicloud.store.sql.session import create_db_engine, writer
from aicloud.store.training import BlobRefStore, JobStore, RunFilter, RunStore
from aicloud.testing.stores import InMemoryBlobRefStore, InMemoryJobStore, InMemoryRunStore

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
)

T = TypeVar("T")

PENDING, RUNNING = JobStatus.PENDING, JobStatus.RUNNING
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


@dataclass
class Tracking:
    """A job store and a run store over one backend, and a way to make workspaces there."""

    jobs: JobStore
    runs: RunStore
    workspace: Callable[[str], str]  # name → id


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "memory"]


@pytest.fixture(name="tracking", params=BACKENDS)
def tracking_fixture(request: pytest.FixtureRequest) -> Iterator[Tracking]:
    if request.param == "memory":
        jobs = InMemoryJobStore()
        yield Tracking(jobs=jobs, runs=InMemoryRunStore(jobs), workspace=lambda name: f"ws_{name}")
        return
    url = str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))
    store = open_store(url)
    try:
        yield Tracking(
            jobs=store.jobs, runs=store.runs, workspace=lambda name: store.workspaces.create(name).id
        )
    finally:
        store.close()


def _race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(0..n-1)`` in n threads released at once; their results in order."""
    barrier = threading.Barrier(n)

    def go(i: int) -> T:
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n)))


def _job(store: MetadataStore | Tracking, workspace_id: str, name: str = "train", priority: int = 0) -> Job:
    return store.jobs.create(
        workspace_id=workspace_id,
        name=name,
        kind=JobKind.TRAIN,
        spec={"task": "tabular-classification", "params": {"epochs": 3, "lr": 0.001}, "dims": (2, 3)},
        priority=priority,
    )


def _version(store: MetadataStore, workspace_id: str, name: str = "digits", **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "files": {"model.safetensors": "a" * 64, "config.json": "b" * 64},
        "signature": {"inputs": [{"name": "x", "dtype": "float64"}], "outputs": [{"name": "y"}]},
        "config": {"format": "aicloud.model/v1", "task": "tabular-classification"},
        "metrics": {"accuracy": 0.97, "loss": 0.08},
        "lineage": {"job_id": "job_1", "run_id": "run_1", "datasets": [{"id": "dsv_1", "version": 1}]},
    }
    fields.update(overrides)
    return store.models.create_version(workspace_id=workspace_id, name=name, **fields)


# --- jobs -------------------------------------------------------------------------------


def test_job_crud(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    job = _job(tracking, ws)

    assert job.id.startswith("job_")
    assert job.status == PENDING and job.kind == JobKind.TRAIN and job.priority == 0
    assert job.spec == {
        "task": "tabular-classification",
        "params": {"epochs": 3, "lr": 0.001},
        "dims": [2, 3],
    }
    assert job.handle == {} and job.usage == {} and not job.cancel_requested
    assert job.created_at.tzinfo is not None and job.started_at is None and job.finished_at is None
    assert tracking.jobs.get(ws, job.id) == job
    assert tracking.jobs.get_any(job.id) == job

    updated = tracking.jobs.update(
        job.id, handle={"pid": 42, "pgid": 42}, run_id="run_x", message="hello", usage={"cpu_s": 1.5}
    )
    assert updated.handle == {"pid": 42, "pgid": 42} and updated.run_id == "run_x"
    assert updated.message == "hello" and updated.usage == {"cpu_s": 1.5} and updated.status == PENDING
    again = tracking.jobs.update(job.id, model_version_id="mv_1", log_digest="c" * 64)
    assert again.handle == {"pid": 42, "pgid": 42} and again.run_id == "run_x"  # None = unchanged
    assert again.model_version_id == "mv_1" and again.log_digest == "c" * 64
    assert tracking.jobs.update(job.id) == again
    assert tracking.jobs.get(ws, job.id) == again


def test_job_owner_parent_attempt_and_checkpoint(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    sweep = tracking.jobs.create(
        workspace_id=ws, name="sweep", kind=JobKind.SWEEP, spec={"x": 1}, created_by="tok_1"
    )
    assert sweep.created_by == "tok_1" and sweep.parent_id is None
    assert sweep.attempt == 0 and sweep.checkpoint == {}
    trials = [
        tracking.jobs.create(
            workspace_id=ws, name=f"t{i}", kind=JobKind.TRAIN, spec={}, parent_id=sweep.id, created_by="tok_1"
        )
        for i in range(3)
    ]
    _job(tracking, ws, "unrelated")
    listed = tracking.jobs.list(ws, parent_id=sweep.id)
    assert sorted(j.id for j in listed) == sorted(t.id for t in trials)
    assert all(j.parent_id == sweep.id for j in listed)

    moved = tracking.jobs.update(trials[0].id, attempt=2, checkpoint={"digest": "d" * 64, "epoch": 4})
    assert moved.attempt == 2 and moved.checkpoint == {"digest": "d" * 64, "epoch": 4}
    kept = tracking.jobs.update(trials[0].id, message="m")  # None = unchanged
    assert kept.attempt == 2 and kept.checkpoint == {"digest": "d" * 64, "epoch": 4}
    assert tracking.jobs.get(ws, trials[0].id) == kept


def test_job_list_and_queue_order(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    other = tracking.workspace("beta")
    low_old = _job(tracking, ws, "low-old", priority=0)
    high = _job(tracking, ws, "high", priority=10)
    low_new = _job(tracking, other, "low-new", priority=0)
    mid = _job(tracking, ws, "mid", priority=5)
    done = _job(tracking, ws, "done", priority=100)
    assert tracking.jobs.transition(done.id, expect=[PENDING], status=RUNNING) is not None
    assert tracking.jobs.transition(done.id, expect=[RUNNING], status=SUCCEEDED) is not None

    queue = tracking.jobs.in_states([PENDING])
    assert [j.name for j in queue] == ["high", "mid", "low-old", "low-new"]  # across workspaces
    both = tracking.jobs.in_states([PENDING, SUCCEEDED])
    assert [j.name for j in both] == ["done", "high", "mid", "low-old", "low-new"]
    assert tracking.jobs.in_states([]) == []
    assert tracking.jobs.in_states([PENDING], kinds=[]) == []
    assert tracking.jobs.in_states([PENDING], kinds=[JobKind.SWEEP]) == []
    assert tracking.jobs.in_states([PENDING], kinds=[JobKind.TRAIN]) == queue
    assert tracking.jobs.in_states([FAILED]) == []

    assert [j.name for j in tracking.jobs.list(ws)] == ["done", "mid", "high", "low-old"]  # newest first
    assert [j.name for j in tracking.jobs.list(ws, limit=2)] == ["done", "mid"]
    assert [j.name for j in tracking.jobs.list(ws, status=PENDING)] == ["mid", "high", "low-old"]
    assert [j.id for j in tracking.jobs.list(other)] == [low_new.id]
    assert {low_old.id, high.id, mid.id} <= {j.id for j in tracking.jobs.list(ws)}


def test_job_transitions_are_compare_and_set(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    job = _job(tracking, ws)
    started = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

    assert tracking.jobs.transition(job.id, expect=[RUNNING], status=SUCCEEDED) is None
    assert tracking.jobs.get(ws, job.id).status == PENDING
    running = tracking.jobs.transition(
        job.id, expect=[PENDING], status=RUNNING, handle={"pid": 7}, started_at=started
    )
    assert running is not None
    assert running.status == RUNNING and running.handle == {"pid": 7} and running.started_at == started
    failed = tracking.jobs.transition(
        job.id,
        expect=[RUNNING],
        status=FAILED,
        reason="error",
        message="Traceback ...",
        finished_at=started + timedelta(seconds=3),
        log_digest="d" * 64,
        usage={"wall_s": 3.0},
    )
    assert failed is not None
    assert failed.status == FAILED and failed.reason == "error" and failed.message == "Traceback ..."
    assert failed.handle == {"pid": 7} and failed.started_at == started  # untouched
    assert failed.finished_at == started + timedelta(seconds=3)
    assert failed.log_digest == "d" * 64 and failed.usage == {"wall_s": 3.0}
    assert tracking.jobs.get(ws, job.id) == failed
    assert tracking.jobs.transition(job.id, expect=[PENDING, RUNNING], status=SUCCEEDED) is None
    with pytest.raises(NotFoundError, match="job 'job_missing' does not exist"):
        tracking.jobs.transition("job_missing", expect=[PENDING], status=RUNNING)
    with pytest.raises(NotFoundError, match="job 'job_missing' does not exist"):
        tracking.jobs.update("job_missing", message="x")


def test_racing_transitions_have_one_winner(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    for _ in range(5):
        job = _job(tracking, ws)

        def start(i: int, job_id: str = job.id) -> Job | None:
            return tracking.jobs.transition(job_id, expect=[PENDING], status=RUNNING, handle={"winner": i})

        results = _race(8, start)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert tracking.jobs.get(ws, job.id).handle == winners[0].handle


def test_cancel_races_the_start(tracking: Tracking) -> None:
    """A cancel and a start racing on a pending job: the job ends in one consistent state."""
    ws = tracking.workspace("alpha")
    for _ in range(5):
        job = _job(tracking, ws)

        def act(i: int, job_id: str = job.id) -> Job | None:
            if i == 0:
                return tracking.jobs.request_cancel(ws, job_id)
            return tracking.jobs.transition(job_id, expect=[PENDING], status=RUNNING)

        results = _race(2, act)
        final = tracking.jobs.get(ws, job.id)
        if results[1] is None:  # the cancel came first
            assert final.status == CANCELLED and final.reason == "cancelled"
        else:  # the start came first: the running job is flagged for the controller
            assert final.status == RUNNING and final.cancel_requested


def test_request_cancel(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    pending = _job(tracking, ws)
    before = datetime.now(UTC)
    cancelled = tracking.jobs.request_cancel(ws, pending.id)
    assert cancelled.status == CANCELLED and cancelled.reason == "cancelled" and cancelled.cancel_requested
    assert cancelled.finished_at is not None and cancelled.finished_at >= before - timedelta(seconds=1)
    assert tracking.jobs.request_cancel(ws, pending.id) == cancelled  # terminal: unchanged

    running = _job(tracking, ws)
    tracking.jobs.transition(running.id, expect=[PENDING], status=RUNNING)
    flagged = tracking.jobs.request_cancel(ws, running.id)
    assert flagged.status == RUNNING and flagged.cancel_requested and flagged.finished_at is None
    assert flagged.reason is None
    done = tracking.jobs.transition(running.id, expect=[RUNNING], status=CANCELLED, reason="cancelled")
    assert done is not None and done.cancel_requested

    finished = _job(tracking, ws)
    tracking.jobs.transition(finished.id, expect=[PENDING], status=SUCCEEDED)
    unchanged = tracking.jobs.get(ws, finished.id)
    assert tracking.jobs.request_cancel(ws, finished.id) == unchanged
    assert not unchanged.cancel_requested


def test_jobs_are_isolated_by_workspace(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    other = tracking.workspace("beta")
    job = _job(tracking, ws)
    with pytest.raises(NotFoundError, match=f"job '{job.id}' does not exist"):
        tracking.jobs.get(other, job.id)
    with pytest.raises(NotFoundError, match=f"job '{job.id}' does not exist"):
        tracking.jobs.request_cancel(other, job.id)
    assert tracking.jobs.get(ws, job.id).status == PENDING
    assert tracking.jobs.list(other) == []


# --- runs -------------------------------------------------------------------------------


def test_run_crud(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    job = _job(tracking, ws)
    run = tracking.runs.create(workspace_id=ws, job_id=job.id, name="attempt-1", params={"lr": 0.1})
    loose = tracking.runs.create(workspace_id=ws, job_id=None, name="notebook")

    assert run.id.startswith("run_") and run.status == RunStatus.RUNNING and run.job_id == job.id
    assert run.params == {"lr": 0.1} and run.summary == {} and run.finished_at is None
    assert loose.params == {} and loose.job_id is None
    assert tracking.runs.get(ws, run.id) == run
    assert [r.id for r in tracking.runs.list(ws)] == [loose.id, run.id]  # newest first
    assert [r.id for r in tracking.runs.list(ws, job_id=job.id)] == [run.id]
    assert [r.id for r in tracking.runs.list(ws, limit=1)] == [loose.id]

    merged = tracking.runs.log_params(ws, run.id, {"epochs": 3, "lr": 0.2, "hidden": (8, 4)})
    assert merged.params == {"lr": 0.2, "epochs": 3, "hidden": [8, 4]}
    finished = tracking.runs.finish(ws, run.id, RunStatus.SUCCEEDED)
    assert finished.status == RunStatus.SUCCEEDED and finished.finished_at is not None
    assert tracking.runs.get(ws, run.id) == finished


def test_run_list_filters_sorts_by_a_metric_and_pages(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    a = tracking.jobs.create(workspace_id=ws, name="mlp-a", kind=JobKind.TRAIN, spec={"model_name": "digits"})
    b = tracking.jobs.create(workspace_id=ws, name="mlp-b", kind=JobKind.TRAIN, spec={"model_name": "other"})
    runs = [tracking.runs.create(workspace_id=ws, job_id=j.id, name=j.name) for j in (a, a, b)]
    for run, loss in zip(runs, (0.5, 0.2, 0.9), strict=True):
        tracking.runs.log_metrics(ws, run.id, [MetricPoint("eval_loss", 1, loss, 1.0)])
    bare = tracking.runs.create(workspace_id=ws, job_id=None, name="notebook")
    tracking.runs.finish(ws, runs[0].id, RunStatus.SUCCEEDED)

    def ids(**where: Any) -> list[str]:
        limit = where.pop("limit", 100)
        return [r.id for r in tracking.runs.list(ws, limit=limit, where=RunFilter(**where))]

    assert ids(model="digits") == [runs[1].id, runs[0].id]
    assert ids(job="mlp-b") == ids(job=b.id) == [runs[2].id]
    assert ids(status=RunStatus.SUCCEEDED) == [runs[0].id]
    assert ids(metric="eval_loss") == [runs[1].id, runs[0].id, runs[2].id, bare.id]  # without it: last
    assert ids(metric="eval_loss", descending=True) == [runs[2].id, runs[0].id, runs[1].id, bare.id]
    assert ids(metric="eval_loss", offset=1, limit=2) == [runs[0].id, runs[2].id]
    assert ids(model="digits", status=RunStatus.RUNNING) == [runs[1].id]
    assert ids(model="nope") == [] and ids(job="nope") == []


def test_metrics_summary_and_history(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    run = tracking.runs.create(workspace_id=ws, job_id=None, name="r")
    first = [
        MetricPoint("loss", 2, 0.5, 102.0),
        MetricPoint("loss", 0, 0.9, 100.0),
        MetricPoint("acc", 1, 0.7, 101.0),
        MetricPoint("loss", 1, 0.7, 101.0),
        MetricPoint("Loss", 0, 1.0, 100.0),  # names are case-sensitive, ordered by code point
    ]
    assert tracking.runs.log_metrics(ws, run.id, first) == 5
    assert tracking.runs.log_metrics(ws, run.id, []) == 0
    assert tracking.runs.get(ws, run.id).summary == {"Loss": 1.0, "acc": 0.7, "loss": 0.5}
    # A late point with an older step does not become the summary; a newer one does; a tie on
    # (step, timestamp) goes to the point logged last.
    second = [
        MetricPoint("loss", 1, 0.1, 200.0),
        MetricPoint("acc", 3, 0.8, 103.0),
        MetricPoint("loss", 2, 0.4, 102.0),
        MetricPoint("val/nan", 0, math.nan, 1.0),
        MetricPoint("val/inf", 0, math.inf, 1.0),
    ]
    tracking.runs.log_metrics(ws, run.id, second)
    summary = tracking.runs.get(ws, run.id).summary
    assert {k: v for k, v in summary.items() if not k.startswith("val/")} == {
        "Loss": 1.0,
        "acc": 0.8,
        "loss": 0.4,
    }
    assert list(summary) == ["Loss", "acc", "loss", "val/inf", "val/nan"]
    assert math.isnan(summary["val/nan"]) and math.isnan(summary["val/inf"])

    history = tracking.runs.metric_history(ws, run.id, "loss")
    assert [(p.step, p.value, p.timestamp) for p in history] == [
        (0, 0.9, 100.0),
        (1, 0.7, 101.0),
        (1, 0.1, 200.0),
        (2, 0.5, 102.0),
        (2, 0.4, 102.0),  # same step and time: in the order logged
    ]
    everything = tracking.runs.metric_history(ws, run.id)
    assert [p.name for p in everything] == ["Loss", "acc", "acc"] + ["loss"] * 5 + ["val/inf", "val/nan"]
    assert all(isinstance(p, MetricPoint) for p in everything)
    assert math.isnan(everything[-1].value)
    assert tracking.runs.metric_history(ws, run.id, "missing") == []

    columns = tracking.runs.metric_columns(ws, run.id)
    assert list(columns) == ["Loss", "acc", "loss", "val/inf", "val/nan"]
    assert columns["loss"] == {
        "steps": [0, 1, 1, 2, 2],
        "values": [0.9, 0.7, 0.1, 0.5, 0.4],
        "timestamps": [100.0, 101.0, 200.0, 102.0, 102.0],
    }
    assert columns["val/nan"] == {"steps": [0], "values": [None], "timestamps": [1.0]}
    assert tracking.runs.metric_columns(ws, run.id, "acc") == {
        "acc": {"steps": [1, 3], "values": [0.7, 0.8], "timestamps": [101.0, 103.0]}
    }
    assert tracking.runs.metric_columns(ws, run.id, "missing") == {}


def test_concurrent_metric_batches_keep_the_summary(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    run = tracking.runs.create(workspace_id=ws, job_id=None, name="r")

    def log(i: int) -> int:
        points = [MetricPoint(f"m{j}", i * 100 + k, float(i), 1.0) for j in range(4) for k in range(100)]
        return tracking.runs.log_metrics(ws, run.id, points)

    assert _race(6, log) == [400] * 6
    summary = tracking.runs.get(ws, run.id).summary
    assert summary == {f"m{j}": 5.0 for j in range(4)}
    assert len(tracking.runs.metric_history(ws, run.id)) == 2400


def test_runs_are_isolated_by_workspace(tracking: Tracking) -> None:
    ws = tracking.workspace("alpha")
    other = tracking.workspace("beta")
    job = _job(tracking, ws)
    run = tracking.runs.create(workspace_id=ws, job_id=job.id, name="r")
    tracking.runs.log_metrics(ws, run.id, [MetricPoint("loss", 0, 1.0, 1.0)])
    missing = f"run '{run.id}' does not exist"
    with pytest.raises(NotFoundError, match=missing):
        tracking.runs.get(other, run.id)
    with pytest.raises(NotFoundError, match=missing):
        tracking.runs.log_params(other, run.id, {"x": 1})
    with pytest.raises(NotFoundError, match=missing):
        tracking.runs.log_metrics(other, run.id, [MetricPoint("loss", 1, 0.0, 2.0)])
    with pytest.raises(NotFoundError, match=missing):
        tracking.runs.metric_history(other, run.id)
    with pytest.raises(NotFoundError, match=missing):
        tracking.runs.metric_columns(other, run.id)
    with pytest.raises(NotFoundError, match=missing):
        tracking.runs.finish(other, run.id, RunStatus.FAILED)
    with pytest.raises(NotFoundError, match=f"job '{job.id}' does not exist"):
        tracking.runs.create(workspace_id=other, job_id=job.id, name="stolen")
    assert tracking.runs.list(other) == []
    assert tracking.runs.list(other, job_id=job.id) == []
    unchanged = tracking.runs.get(ws, run.id)
    assert unchanged.params == {} and unchanged.status == RunStatus.RUNNING
    assert len(tracking.runs.metric_history(ws, run.id)) == 1


def test_run_list_by_model_finds_the_runs_that_registered_a_version(store: MetadataStore) -> None:
    ws = store.workspaces.create("models-of-runs").id
    job = _job(store, ws)  # a spec without model_name: the model comes from the session's save_model
    run = store.runs.create(workspace_id=ws, job_id=job.id, name="custom")
    store.runs.create(workspace_id=ws, job_id=None, name="other")
    _version(store, ws, name="custom-net", lineage={"job_id": job.id, "run_id": run.id})
    assert [r.id for r in store.runs.list(ws, where=RunFilter(model="custom-net"))] == [run.id]
    other = store.workspaces.create("models-of-runs-2").id
    assert store.runs.list(other, where=RunFilter(model="custom-net")) == []


def test_metric_history_of_100k_points(store: MetadataStore) -> None:
    """Timing is printed, not asserted (the contract is well under 300 ms on SQLite)."""
    ws = store.workspaces.create("alpha")
    run = store.runs.create(workspace_id=ws.id, job_id=None, name="r")
    names = ["train/loss", "train/acc", "eval/loss", "eval/acc"]
    batch = 10_000
    start = time.perf_counter()
    for b in range(10):
        points = [
            MetricPoint(names[i % 4], (b * batch + i) // 4, float(b * batch + i), 1e9 + b * batch + i)
            for i in range(batch)
        ]
        assert store.runs.log_metrics(ws.id, run.id, points) == batch
    logged = time.perf_counter() - start

    timings = []
    for _ in range(3):
        start = time.perf_counter()
        history = store.runs.metric_history(ws.id, run.id)
        timings.append(time.perf_counter() - start)
    columns_timings = []
    for _ in range(3):
        start = time.perf_counter()
        columns = store.runs.metric_columns(ws.id, run.id)
        columns_timings.append(time.perf_counter() - start)
    dialect = "postgresql" if "postgresql" in str(store) else "sqlite"
    print(
        f"\n[{dialect}] 100k points: log_metrics 10 x 10k {logged * 1000:.0f} ms, "
        f"metric_history best {min(timings) * 1000:.0f} ms, "
        f"metric_columns best {min(columns_timings) * 1000:.0f} ms"
    )

    assert len(history) == 100_000
    assert [p.name for p in history[::25_000]] == sorted(names)
    series = [p for p in history if p.name == "train/loss"]
    assert [p.step for p in series] == list(range(25_000))
    assert series[-1].value == 99_996.0
    assert sorted(columns) == sorted(names)
    assert columns["train/loss"]["steps"] == list(range(25_000))
    assert columns["eval/acc"]["values"][-1] == 99_999.0
    assert store.runs.get(ws.id, run.id).summary == {
        "eval/acc": 99_999.0,
        "eval/loss": 99_998.0,
        "train/acc": 99_997.0,
        "train/loss": 99_996.0,
    }


def test_jobs_and_runs_need_a_workspace(store: MetadataStore) -> None:
    with pytest.raises(NotFoundError, match="workspace 'ws_missing' does not exist"):
        _job(store, "ws_missing")
    with pytest.raises(NotFoundError, match="workspace 'ws_missing' does not exist"):
        store.runs.create(workspace_id="ws_missing", job_id=None, name="r")


# --- models -----------------------------------------------------------------------------


def test_model_versions(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    v1 = _version(store, ws.id)
    v2 = _version(store, ws.id, metrics={"accuracy": 0.98, "loss": math.nan}, lineage={"run_id": "r2"})
    _version(store, ws.id, "another")

    assert v1.id.startswith("mv_") and (v1.version, v2.version) == (1, 2)
    assert v1.files == {"model.safetensors": "a" * 64, "config.json": "b" * 64}
    assert v1.lineage["datasets"] == [{"id": "dsv_1", "version": 1}] and v1.aliases == []
    assert v2.metrics == {"accuracy": 0.98, "loss": None}  # as JSON stores it
    assert store.models.get_version(ws.id, "digits", 1) == v1
    assert store.models.get_version(ws.id, "digits") == v2  # latest
    assert store.models.get_version_by_id(ws.id, v1.id) == v1
    assert store.models.list_versions(ws.id, "digits") == [v1, v2]
    models = store.models.list_models(ws.id)
    assert [(m.name, m.latest_version, m.aliases) for m in models] == [("another", 1, {}), ("digits", 2, {})]
    assert models[1].id.startswith("mdl_") and models[1].workspace_id == ws.id

    with pytest.raises(NotFoundError, match="model 'digits' has no version 3"):
        store.models.get_version(ws.id, "digits", 3)
    for call in (
        lambda: store.models.get_version(ws.id, "nope"),
        lambda: store.models.get_version(ws.id, "nope", 1),
        lambda: store.models.list_versions(ws.id, "nope"),
        lambda: store.models.get_version_by_alias(ws.id, "nope", "production"),
        lambda: store.models.set_alias(ws.id, "nope", "production", 1),
        lambda: store.models.delete_alias(ws.id, "nope", "production"),
    ):
        with pytest.raises(NotFoundError, match="model 'nope' does not exist"):
            call()
    with pytest.raises(NotFoundError, match="model version 'mv_missing' does not exist"):
        store.models.get_version_by_id(ws.id, "mv_missing")
    with pytest.raises(NotFoundError, match="workspace 'ws_missing' does not exist"):
        _version(store, "ws_missing")


def test_model_aliases(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    v1 = _version(store, ws.id)
    _version(store, ws.id)
    _version(store, ws.id)

    with pytest.raises(NotFoundError, match="model 'digits' has no alias 'production'"):
        store.models.get_version_by_alias(ws.id, "digits", "production")
    got = store.models.set_alias(ws.id, "digits", "production", 1)
    assert got.version == 1 and got.id == v1.id and got.aliases == ["production"]
    store.models.set_alias(ws.id, "digits", "staging", 1)
    assert store.models.get_version(ws.id, "digits", 1).aliases == ["production", "staging"]

    moved = store.models.set_alias(ws.id, "digits", "production", 3)  # moves, atomically
    assert moved.version == 3 and moved.aliases == ["production"]
    assert store.models.get_version_by_alias(ws.id, "digits", "production") == moved
    assert store.models.get_version(ws.id, "digits", 1).aliases == ["staging"]
    assert [v.aliases for v in store.models.list_versions(ws.id, "digits")] == [
        ["staging"],
        [],
        ["production"],
    ]
    assert store.models.list_models(ws.id)[0].aliases == {"production": 3, "staging": 1}
    assert store.models.set_alias(ws.id, "digits", "production", 3) == moved  # idempotent

    with pytest.raises(NotFoundError, match="model 'digits' has no version 9"):
        store.models.set_alias(ws.id, "digits", "production", 9)
    assert store.models.get_version_by_alias(ws.id, "digits", "production").version == 3

    store.models.delete_alias(ws.id, "digits", "staging")
    with pytest.raises(NotFoundError, match="model 'digits' has no alias 'staging'"):
        store.models.get_version_by_alias(ws.id, "digits", "staging")
    with pytest.raises(NotFoundError, match="model 'digits' has no alias 'staging'"):
        store.models.delete_alias(ws.id, "digits", "staging")
    assert store.models.list_models(ws.id)[0].aliases == {"production": 3}


def test_concurrent_model_versions(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    versions = _race(10, lambda i: _version(store, ws.id, "shared", metrics={"i": float(i)}))
    assert sorted(v.version for v in versions) == list(range(1, 11))
    assert len({v.id for v in versions}) == 10
    assert store.models.list_models(ws.id)[0].latest_version == 10
    assert [v.version for v in store.models.list_versions(ws.id, "shared")] == list(range(1, 11))


def test_concurrent_alias_moves(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    for _ in range(4):
        _version(store, ws.id)
    _race(8, lambda i: store.models.set_alias(ws.id, "digits", "production", i % 4 + 1))
    pointed = [v for v in store.models.list_versions(ws.id, "digits") if "production" in v.aliases]
    assert len(pointed) == 1
    assert store.models.list_models(ws.id)[0].aliases == {"production": pointed[0].version}


def test_models_are_isolated_by_workspace(store: MetadataStore) -> None:
    ws = store.workspaces.create("alpha")
    other = store.workspaces.create("beta")
    mine = _version(store, ws.id)
    store.models.set_alias(ws.id, "digits", "production", 1)
    theirs = _version(store, other.id)  # the same name in another workspace is another model

    assert theirs.version == 1 and theirs.id != mine.id
    with pytest.raises(NotFoundError, match=f"model version '{mine.id}' does not exist"):
        store.models.get_version_by_id(other.id, mine.id)
    with pytest.raises(NotFoundError, match="model 'digits' has no alias 'production'"):
        store.models.get_version_by_alias(other.id, "digits", "production")
    assert store.models.list_models(other.id)[0].aliases == {}
    assert store.models.get_version(other.id, "digits") == theirs
    third = store.workspaces.create("gamma")
    assert store.models.list_models(third.id) == []
    with pytest.raises(NotFoundError, match="model 'digits' does not exist"):
        store.models.get_version(third.id, "digits")


# --- blob refs --------------------------------------------------------------------------


@dataclass
class Refs:
    """A blob reference store over one backend, and a way to make workspaces there."""

    refs: BlobRefStore
    workspace: Callable[[str], str]  # name → id


@pytest.fixture(name="refs", params=BACKENDS)
def refs_fixture(request: pytest.FixtureRequest) -> Iterator[Refs]:
    if request.param == "memory":
        workspaces: set[str] = set()

        def make(name: str) -> str:
            workspaces.add(f"ws_{name}")
            return f"ws_{name}"

        yield Refs(InMemoryBlobRefStore(workspaces), workspace=make)
        return
    url = str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))
    store = open_store(url)
    try:
        yield Refs(store.blob_refs, workspace=lambda name: store.workspaces.create(name).id)
    finally:
        store.close()


def test_blob_refs(refs: Refs) -> None:
    ws = refs.workspace("alpha")
    other = refs.workspace("beta")
    digest = "e" * 64
    assert not refs.refs.owns(ws, digest) and not refs.refs.in_use(digest)
    refs.refs.add(ws, digest)
    refs.refs.add(ws, digest)  # idempotent
    _race(4, lambda i: refs.refs.add(ws, "f" * 64))
    assert refs.refs.owns(ws, digest) and refs.refs.owns(ws, "f" * 64) and refs.refs.in_use(digest)
    assert not refs.refs.owns(other, digest)  # knowing a digest is not holding a reference
    refs.refs.add(other, digest, BlobOwner.MODEL_VERSION, "mv_1")
    assert refs.refs.owns(other, digest)
    with pytest.raises(NotFoundError, match="workspace 'ws_missing' does not exist"):
        refs.refs.add("ws_missing", digest)


def test_blob_refs_release(refs: Refs) -> None:
    """A digest comes back from ``release`` only when no reference of any kind, in any workspace, is left."""
    a, b = refs.workspace("alpha"), refs.workspace("beta")
    shared, mine = "1" * 64, "2" * 64
    refs.refs.add(a, shared)  # A uploaded it
    for owner_id in ("dsv_1", "dsv_2"):
        refs.refs.add(b, shared, BlobOwner.DATASET_VERSION, owner_id)
    refs.refs.add(b, mine, BlobOwner.DATASET_VERSION, "dsv_1")
    refs.refs.add(b, mine, BlobOwner.JOB_LOG, "job_1")

    assert refs.refs.release(b, BlobOwner.DATASET_VERSION, "dsv_1") == []  # still held elsewhere
    assert refs.refs.release(b, BlobOwner.DATASET_VERSION, "dsv_2") == []  # A's upload holds it
    assert refs.refs.owns(a, shared) and not refs.refs.owns(b, shared)
    assert refs.refs.release(a, BlobOwner.DATASET_VERSION, "dsv_2") == []  # another workspace's owner
    assert refs.refs.release(b, BlobOwner.JOB_LOG, "job_1") == [mine]
    assert not refs.refs.in_use(mine) and refs.refs.release(b, BlobOwner.JOB_LOG, "job_1") == []
    assert refs.refs.release(a, BlobOwner.UPLOAD, "") == [shared]
    assert not refs.refs.in_use(shared)


def test_blob_refs_release_races_add(refs: Refs) -> None:
    """Of a release and a concurrent add of the same digest, either the add wins (nothing comes
    back) or the release does (the digest comes back and the add happened after it)."""
    a, b = refs.workspace("alpha"), refs.workspace("beta")
    for round in range(10):
        digest = f"{round:064x}"
        refs.refs.add(a, digest, BlobOwner.DATASET_VERSION, "dsv")

        def step(i: int, digest: str = digest) -> list[str]:
            if i == 0:
                return refs.refs.release(a, BlobOwner.DATASET_VERSION, "dsv")
            refs.refs.add(b, digest)
            return []

        released, _ = _race(2, step)
        assert refs.refs.owns(b, digest)
        assert released in ([], [digest])


# --- migrations -------------------------------------------------------------------------


def test_open_store_upgrades_a_database_at_0001(store_url: str) -> None:
    engine = create_db_engine(store_url)
    try:
        with writer(engine).begin() as connection:
            config = migrate.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
        assert migrate.current_revision_engine(engine) == "0001"
        assert "jobs" not in inspect(engine).get_table_names()
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO workspaces (id, name, created_at) "
                "VALUES ('ws_old', 'old', '2024-01-01 00:00:00')"
            )
    finally:
        engine.dispose()

    store = open_store(store_url)
    try:
        assert migrate.current_revision(store_url) == migrate.head_revision()
        assert store.workspaces.get("ws_old").name == "old"
        job = _job(store, "ws_old")
        run = store.runs.create(workspace_id="ws_old", job_id=job.id, name="r")
        store.runs.log_metrics("ws_old", run.id, [MetricPoint("loss", 0, 1.0, 1.0)])
        assert _version(store, "ws_old").version == 1
        store.blob_refs.add("ws_old", "a" * 64)
    finally:
        store.close()
    engine = create_db_engine(store_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {
            "jobs",
            "runs",
            "run_metrics",
            "metric_chunks",
            "models",
            "model_versions",
            "model_aliases",
            "blob_refs",
        } <= tables
    finally:
        engine.dispose()


_AT_0004 = [
    "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_a', 'a', '{t}'), ('ws_b', 'b', '{t}')",
    "INSERT INTO tokens (id, workspace_id, name, role, secret_hash, created_at) VALUES "
    "('tok_1', 'ws_a', 'ci', 'admin', 'h', '2024-01-01 00:00:00'), "
    "('tok_2', 'ws_a', 'ci', 'admin', 'h', '2024-01-02 00:00:00'), "
    "('tok_3', 'ws_b', 'ci', 'admin', 'h', '{t}')",
    "INSERT INTO blob_refs (workspace_id, digest, size_bytes, created_at) "
    "VALUES ('ws_a', '{upload}', 1, '{t}')",
    "INSERT INTO datasets (id, workspace_id, name, last_version, created_at, updated_at) "
    "VALUES ('ds_1', 'ws_b', 'copy', 2, '{t}', '{t}')",
    "INSERT INTO dataset_versions (id, dataset_id, workspace_id, version, format, filename, blob_digest, "
    "size_bytes, num_rows, schema, stats, lineage, status, created_at) VALUES "
    "('dsv_1', 'ds_1', 'ws_b', 1, 'csv', 'a.csv', '{upload}', 1, 1, '[]', '{{}}', '{{}}', 'ready', '{t}'), "
    "('dsv_2', 'ds_1', 'ws_b', 2, 'csv', 'b.csv', '{own}', 1, 1, '[]', '{{}}', '{{}}', 'ready', '{t}')",
    "INSERT INTO models (id, workspace_id, name, last_version, created_at, updated_at) "
    "VALUES ('mdl_1', 'ws_a', 'm', 1, '{t}', '{t}')",
    "INSERT INTO model_versions (id, model_id, workspace_id, version, files, signature, config, metrics, "
    "lineage, created_at) VALUES ('mv_1', 'mdl_1', 'ws_a', 1, '{{\"model.safetensors\": \"{model}\"}}', "
    "'{{}}', '{{}}', '{{}}', '{{}}', '{t}')",
    "INSERT INTO jobs (id, workspace_id, name, kind, spec, status, priority, created_at, cancel_requested, "
    "handle, usage, log_digest, checkpoint) VALUES ('job_1', 'ws_a', 'j', 'command', "
    "'{{\"command\": \"true\", \"code\": \"{code}\"}}', 'failed', 0, '{t}', false, '{{}}', '{{}}', "
    "'{log}', '{{\"digest\": \"{checkpoint}\"}}')",
    "INSERT INTO deployments (id, workspace_id, name, spec, status, generation, desired_replicas, "
    "created_at, updated_at) VALUES ('dep_1', 'ws_a', 'svc', "
    "'{{\"service\": {{\"code\": \"{service}\"}}}}', 'pending', 1, 1, '{t}', '{t}')",
]


def test_upgrade_to_0005_backfills_blob_refs_and_renames_duplicate_tokens(store_url: str) -> None:
    digests = dict(
        zip(["upload", "model", "code", "log", "checkpoint", "service", "own"], "1234567", strict=True)
    )
    digests = {name: c * 64 for name, c in digests.items()}
    engine = create_db_engine(store_url)
    try:
        with writer(engine).begin() as connection:
            config = migrate.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
        with engine.begin() as connection:
            for statement in _AT_0004:
                connection.exec_driver_sql(statement.format(t="2024-01-03 00:00:00", **digests))
    finally:
        engine.dispose()

    store = open_store(store_url)
    try:
        held = [digests[name] for name in ("upload", "model", "code", "log", "checkpoint", "service")]
        assert all(store.blob_refs.owns("ws_a", digest) for digest in held)
        assert store.blob_refs.owns("ws_b", digests["upload"]) and store.blob_refs.owns(
            "ws_b", digests["own"]
        )
        assert not store.blob_refs.owns("ws_b", digests["model"])
        # the bug the back-fill closes: B's dataset shares A's uploaded bytes
        assert store.datasets.delete_dataset("ws_b", "copy") == [digests["own"]]
        assert store.blob_refs.owns("ws_a", digests["upload"])

        tokens = {t.id: t.name for t in store.tokens.list("ws_a")}
        assert tokens == {"tok_1": "ci", "tok_2": "ci-tok_2"}  # the oldest keeps the name
        assert [t.name for t in store.tokens.list("ws_b")] == ["ci"]
        with pytest.raises(ConflictError):
            store.tokens.create(
                token_id="tok_4", workspace_id="ws_a", name="ci", role=Role.ADMIN, secret_hash="h"
            )
    finally:
        store.close()
