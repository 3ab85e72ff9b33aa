"""Cost = prices * reserved resources * wall time; usage reports by job, user and day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from aicloud.config import Settings
from aicloud.controllers.jobs import JobController
from aicloud.entities import Job, JobKind, JobStatus
from aicloud.entities.usage import COST_KEYS, GIB, Prices, allocation, job_cost, with_cost
from aicloud.errors import ValidationError
from aicloud.executors.base import LaunchRequest
from aicloud.schemas.usage import UsageBy
from aicloud.server.services.usage import parse_bound, summarize
from aicloud.testing.executors import FakeExecutor
from aicloud.testing.stores import InMemoryJobStore

PRICES = Prices(cpu_hour=0.05, gpu_hour=2.5, gb_hour=0.01, currency="EUR")

# --- the cost function ------------------------------------------------------------------


def test_one_cpu_one_hour_one_gib() -> None:
    usage = {"wall_seconds": 3600.0, "peak_rss_bytes": GIB, "cpu_seconds": 1800.0, "exit_code": 0}
    cost = job_cost(usage, {"cpus": 1}, PRICES)
    assert cost == {
        "cpu_hours": 1.0,
        "gpu_hours": 0.0,
        "gb_hours": 1.0,
        "cost": 0.06,  # 1 * 0.05 + 0 * 2.5 + 1 * 0.01
        "currency": "EUR",
        "prices": {"cpu_hour": 0.05, "gpu_hour": 2.5, "gb_hour": 0.01},
    }


def test_multi_worker_gpu_job() -> None:
    usage = {"wall_seconds": 1800.0, "peak_rss_bytes": 2 * GIB}
    prices = Prices(cpu_hour=0.04, gpu_hour=2.0, gb_hour=0.005)
    cost = job_cost(usage, {"workers": 4, "cpus": 2, "gpus": 1}, prices)
    assert cost["cpu_hours"] == 4.0  # 4 workers * 2 cpus * 0.5 h
    assert cost["gpu_hours"] == 2.0  # 4 workers * 1 gpu * 0.5 h
    assert cost["gb_hours"] == 1.0  # 2 GiB * 0.5 h (measured peak, not per worker)
    assert cost["cost"] == pytest.approx(4 * 0.04 + 2 * 2.0 + 1 * 0.005) == 4.165
    assert cost["currency"] == "USD"


def test_short_job_is_priced_to_the_fraction() -> None:
    cost = job_cost({"wall_seconds": 36.0, "peak_rss_bytes": GIB // 2}, {"cpus": 3}, Prices(cpu_hour=1.0))
    assert cost["cpu_hours"] == 0.03 and cost["gb_hours"] == 0.005 and cost["cost"] == 0.03


def test_zero_prices_cost_nothing_but_record_the_hours() -> None:
    cost = job_cost({"wall_seconds": 7200.0, "peak_rss_bytes": GIB}, {"cpus": 2, "gpus": 1}, Prices())
    assert cost["cost"] == 0.0 and cost["cpu_hours"] == 4.0 and cost["gpu_hours"] == 2.0
    assert cost["prices"] == {"cpu_hour": 0.0, "gpu_hour": 0.0, "gb_hour": 0.0}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, (1, 1, 0)),
        ({"cpus": 4, "workers": 3, "gpus": 2}, (3, 4, 2)),
        ({"workers": None, "cpus": None}, (1, 1, 0)),
        ({"workers": "two", "gpus": True}, (1, 1, 0)),
        ({"workers": 0, "cpus": -2}, (1, 0, 0)),
        ({"workers": 2.0}, (2, 1, 0)),
    ],
)
def test_allocation_reads_the_spec_defensively(spec: dict[str, Any], expected: tuple[int, int, int]) -> None:
    assert allocation(spec) == expected


def test_unknown_measurements_count_as_zero() -> None:
    cost = job_cost({"exit_code": None}, {"cpus": 8}, PRICES)
    assert cost["cost"] == 0.0 and cost["cpu_hours"] == 0.0 and cost["gb_hours"] == 0.0
    assert job_cost({"wall_seconds": float("nan"), "peak_rss_bytes": -1}, {}, PRICES)["cost"] == 0.0


def test_with_cost_keeps_the_measured_keys() -> None:
    usage = {"exit_code": 1, "cpu_seconds": 2.0, "peak_rss_bytes": GIB, "wall_seconds": 360.0}
    out = with_cost(usage, {"cpus": 2}, PRICES)
    assert out.items() >= usage.items() and set(out) == set(usage) | set(COST_KEYS)
    assert out["cpu_hours"] == 0.2 and out["cost"] == pytest.approx(0.2 * 0.05 + 0.1 * 0.01)


def test_prices_are_validated() -> None:
    with pytest.raises(ValueError, match="cpu-hour"):
        Prices(cpu_hour=-1)
    with pytest.raises(ValueError, match="gb-hour"):
        Prices(gb_hour=float("nan"))
    settings = Settings(price_cpu_hour=0.5, price_gpu_hour=3, price_gb_hour=0.25, currency="CHF")
    assert Prices.of(settings) == Prices(cpu_hour=0.5, gpu_hour=3.0, gb_hour=0.25, currency="CHF")
    assert Prices.of(Settings()) == Prices()  # free until an operator sets prices
    with pytest.raises(pydantic.ValidationError):
        Settings(price_gpu_hour=-0.1)


def test_the_controller_prices_a_job_when_it_ends(tmp_path: Path) -> None:
    store = InMemoryJobStore()
    executor = FakeExecutor(tmp_path / "logs")  # every job: 1 s wall, 1 MiB peak
    settings = Settings(home=tmp_path, price_cpu_hour=3.6, price_gpu_hour=36, price_gb_hour=3686.4)
    controller = JobController(
        store, executor, settings, lambda job: LaunchRequest(job_id=job.id, argv=["true"]), max_concurrent=2
    )
    spec = {"command": "x", "cpus": 4, "workers": 2, "gpus": 1}
    job = store.create(workspace_id="ws", name="j", kind=JobKind.COMMAND, spec=spec)
    cancelled = store.create(workspace_id="ws", name="c", kind=JobKind.COMMAND, spec={"cpus": 1})
    controller.reconcile_once()
    executor.finish(job.id, 0)
    store.request_cancel("ws", cancelled.id)
    controller.reconcile_once()
    controller.reconcile_once()

    usage = store.get_any(job.id).usage
    assert usage["cpu_hours"] == round(8 / 3600, 9)  # 2 workers * 4 cpus * 1 s
    assert usage["gpu_hours"] == round(2 / 3600, 9)
    assert usage["cost"] == pytest.approx(0.008 + 0.02 + 0.001)  # cpu + gpu + memory
    assert usage["prices"] == {"cpu_hour": 3.6, "gpu_hour": 36.0, "gb_hour": 3686.4}
    gone = store.get_any(cancelled.id)  # cancelled jobs that ran are priced too
    assert gone.status is JobStatus.CANCELLED and gone.usage["cost"] == pytest.approx(0.001 + 0.001)


# --- reports ------------------------------------------------------------------------------

T0 = datetime(2030, 5, 1, 22, 0, tzinfo=UTC)


def _job(
    name: str,
    *,
    usage: dict[str, Any] | None,
    at: datetime = T0,
    kind: JobKind = JobKind.COMMAND,
    by: str | None = "tok_alice",
    parent: str | None = None,
    status: JobStatus = JobStatus.SUCCEEDED,
    spec: dict[str, Any] | None = None,
) -> Job:
    return Job(
        id=f"job_{name}",
        workspace_id="ws",
        name=name,
        kind=kind,
        spec=spec if spec is not None else {"cpus": 1},
        status=status,
        priority=0,
        created_at=at - timedelta(hours=1),
        finished_at=at,
        usage=usage or {},
        created_by=by,
        parent_id=parent,
    )


def _ran(hours: float, prices: Prices = PRICES, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    measured = {"exit_code": 0, "cpu_seconds": 10.0, "peak_rss_bytes": GIB, "wall_seconds": hours * 3600}
    return with_cost(measured, spec or {"cpus": 1}, prices)


SWEEP_SUMMARY = {"metric": "eval_loss", "trials": 2, "complete": 2, "epochs": 6}  # no process of its own


@pytest.fixture
def jobs() -> list[Job]:
    return [
        _job("a", usage=_ran(1)),  # 0.06
        _job("b", usage=_ran(2), at=T0 + timedelta(hours=3), by="tok_bob", status=JobStatus.FAILED),  # 0.12
        _job("never-ran", usage=None, status=JobStatus.CANCELLED),
        _job("sweep", usage=SWEEP_SUMMARY, kind=JobKind.SWEEP, at=T0 + timedelta(hours=4), by="tok_bob"),
        _job("t1", usage=_ran(1), by=None, parent="job_sweep"),  # 0.06
        _job("t2", usage=_ran(1), at=T0 + timedelta(hours=2), by=None, parent="job_sweep"),  # 0.06
    ]


NAMES = {"tok_alice": "alice", "tok_bob": "bob"}


def test_by_job_sums_a_sweeps_trials(jobs: list[Job]) -> None:
    report = summarize(jobs, by=UsageBy.JOB, prices=PRICES, user_names=NAMES)
    assert [r.key for r in report.rows] == ["job_a", "job_b", "job_sweep"]  # by end time
    sweep = report.rows[2]
    assert sweep.jobs == 2 and sweep.kind == "sweep" and sweep.user == "bob"
    assert sweep.cpu_hours == 2.0 and sweep.cost == pytest.approx(0.12) and sweep.currency == "EUR"
    assert report.rows[1].status == "failed" and report.rows[1].cost == pytest.approx(0.12)
    assert report.total.jobs == 4 and report.total.cost == pytest.approx(0.30)
    assert report.total.cpu_hours == 5.0 and report.total.gb_hours == 5.0
    assert report.total.wall_seconds == 5 * 3600 and report.total.cpu_seconds == 40.0
    assert report.total.peak_rss_bytes == GIB


def test_by_user_counts_trials_for_the_sweeps_submitter(jobs: list[Job]) -> None:
    report = summarize(jobs, by=UsageBy.USER, prices=PRICES, user_names={"tok_alice": "alice"})
    assert [(r.key, r.label, r.jobs) for r in report.rows] == [
        ("tok_bob", "tok_bob (deleted)", 3),  # most expensive first
        ("tok_alice", "alice", 1),
    ]
    assert report.rows[0].cost == pytest.approx(0.24) and report.total.cost == pytest.approx(0.30)


def test_by_day_uses_the_utc_end_date(jobs: list[Job]) -> None:
    report = summarize(jobs, by=UsageBy.DAY, prices=PRICES)
    assert [(r.key, r.jobs) for r in report.rows] == [("2030-05-01", 2), ("2030-05-02", 2)]
    assert sum(r.cost for r in report.rows) == pytest.approx(report.total.cost)


def test_trials_whose_sweep_ended_later_are_grouped_through_parents(jobs: list[Job]) -> None:
    trials = [j for j in jobs if j.parent_id]
    sweep = next(j for j in jobs if j.kind is JobKind.SWEEP)
    report = summarize(trials, by=UsageBy.JOB, prices=PRICES, parents={sweep.id: sweep}, user_names=NAMES)
    assert [(r.key, r.jobs, r.user) for r in report.rows] == [("job_sweep", 2, "bob")]
    alone = summarize(trials, by=UsageBy.JOB, prices=PRICES)  # the sweep is gone
    assert [r.key for r in alone.rows] == ["job_t1", "job_t2"] and alone.rows[0].user == "(unknown)"


def test_costs_are_the_recorded_ones_and_old_jobs_are_priced_now() -> None:
    old_prices = Prices(cpu_hour=1.0, currency="EUR")
    recorded = _job("recorded", usage=_ran(1, old_prices))
    legacy = _job("legacy", usage={"wall_seconds": 3600.0, "peak_rss_bytes": 0}, spec={"cpus": 2})
    report = summarize([recorded, legacy], by=UsageBy.JOB, prices=PRICES)
    costs = {r.key: r.cost for r in report.rows}
    assert costs == {"job_recorded": 1.0, "job_legacy": pytest.approx(0.1)}  # 2 cpu-hours * 0.05
    mixed = summarize(
        [recorded, _job("usd", usage=_ran(1, Prices(cpu_hour=1.0)))], by=UsageBy.USER, prices=PRICES
    )
    assert mixed.rows[0].currency == "mixed" and mixed.total.currency == "mixed"


def test_an_empty_report_has_a_zero_total() -> None:
    report = summarize([], by=UsageBy.DAY, prices=PRICES)
    assert report.rows == [] and report.total.jobs == 0 and report.total.cost == 0.0
    assert report.total.currency == "EUR" and report.total.key == "total"


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("2030-05-01", False, datetime(2030, 5, 1, tzinfo=UTC)),
        ("2030-05-01", True, datetime(2030, 5, 2, tzinfo=UTC)),  # a date for `until` includes the day
        ("2030-05-01T12:30:00Z", True, datetime(2030, 5, 1, 12, 30, tzinfo=UTC)),
        ("2030-05-01T12:30:00", False, datetime(2030, 5, 1, 12, 30, tzinfo=UTC)),  # naive = UTC
        ("2030-05-01T14:30:00+02:00", False, datetime(2030, 5, 1, 12, 30, tzinfo=UTC)),
        (None, False, None),
    ],
)
def test_parse_bound(text: str | None, end: bool, expected: datetime | None) -> None:
    assert parse_bound(text, "since", end=end) == expected


@pytest.mark.parametrize("text", ["yesterday", "2030-13-01", "2030-05-01T25:00", "1714600000"])
def test_parse_bound_refuses_what_is_not_a_date(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_bound(text, "until")
    assert info.value.details == [{"field": "until", "message": info.value.details[0]["message"]}]
    assert "not a date" in info.value.message
