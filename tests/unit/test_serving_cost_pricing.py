"""Serving and storage pricing (server.services.usage_costs): the arithmetic, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aicloud.entities.usage import GIB, Prices
from aicloud.server.services.usage_costs import (
    MONTH_SECONDS,
    cost_per_1k,
    overlap_seconds,
    replica_cost,
    serving_rows,
    storage_cost,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
PRICES = Prices(cpu_hour=2.0, gpu_hour=10.0, gb_hour=0.5, currency="EUR")


def test_overlap_clips_to_the_period_and_runs_to_now() -> None:
    now = T0 + 10 * H
    assert overlap_seconds(T0, T0 + 2 * H, None, None, now) == 7200
    assert overlap_seconds(T0, None, None, None, now) == 36000  # running: to now
    assert overlap_seconds(T0, None, T0 + H, T0 + 3 * H, now) == 7200
    assert overlap_seconds(T0, T0 + H, T0 + 2 * H, None, now) == 0  # ended before the period
    assert overlap_seconds(T0 + 5 * H, None, None, T0 + H, now) == 0  # started after it


def test_a_replica_is_priced_like_a_one_worker_job() -> None:
    priced = replica_cost(cpus=2, gpus=1, memory_mb=512, hours=3.0, prices=PRICES)
    assert priced["cpu_hours"] == 6.0 and priced["gpu_hours"] == 3.0
    assert priced["gb_hours"] == pytest.approx(1.5)
    assert priced["cost"] == pytest.approx(6 * 2.0 + 3 * 10.0 + 1.5 * 0.5)
    assert replica_cost(1, 0, None, 2.0, PRICES)["gb_hours"] == 0.0  # no memory limit: not charged


def test_cost_per_1k_predictions() -> None:
    assert cost_per_1k(0.5, 250) == pytest.approx(2.0)
    assert cost_per_1k(0.5, 0) is None


def test_storage_is_size_times_months() -> None:
    months, cost = storage_cost(2 * GIB, MONTH_SECONDS / 2, price_gb_month=0.1)
    assert months == pytest.approx(1.0) and cost == pytest.approx(0.1)
    assert storage_cost(GIB, MONTH_SECONDS, 0.1)[1] * 2 == pytest.approx(
        storage_cost(2 * GIB, MONTH_SECONDS, 0.1)[1]
    )


def test_serving_rows_group_by_deployment_with_a_total() -> None:
    def rec(rid: str, dep: str, start: datetime, end: datetime | None, cpus: int = 1) -> dict[str, object]:
        return {
            "replica_id": rid,
            "deployment_id": f"dep_{dep}",
            "deployment": dep,
            "cpus": cpus,
            "gpus": 0,
            "memory_mb": 1024,
            "started_at": start,
            "ended_at": end,
        }

    replicas = [rec("r1", "a", T0, T0 + H), rec("r2", "a", T0, T0 + 2 * H, cpus=2), rec("r3", "b", T0, None)]
    usage = serving_rows(replicas, {"dep_a": 400}, PRICES, since=None, until=None, now=T0 + H)
    a, b = sorted(usage.rows, key=lambda r: r.deployment)
    assert (a.replicas, a.replica_hours, a.cpu_hours, a.gb_hours) == (2, 3.0, 5.0, 3.0)
    assert a.cost == pytest.approx(5 * 2.0 + 3 * 0.5) and a.requests == 400
    assert a.cost_per_1k == pytest.approx(a.cost * 1000 / 400)
    assert b.requests == 0 and b.cost_per_1k is None and b.replica_hours == 1.0
    assert usage.total.replicas == 3 and usage.total.requests == 400
    assert usage.total.cost == pytest.approx(a.cost + b.cost)
    assert usage.rows[0].deployment == "a"  # most expensive first
    empty = serving_rows([], {}, PRICES, since=None, until=None, now=T0)
    assert empty.rows == [] and empty.total.cost == 0 and empty.total.cost_per_1k is None
