"""How bench/serving_report.py turns result rows into the issue #4 targets (rows made up here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from replica_metrics import batch_stats
from serving_report import describe, targets


def ceiling(req_s: float, round_: int | None = None, pair_workers: int = 1) -> dict[str, Any]:
    row: dict[str, Any] = {"system": "ceiling", "path": "ceiling", "batch": 32, "workers": 2, "req_s": req_s}
    if round_ is not None:
        row.update(round=round_, pair_workers=pair_workers)
    return row


def http(system: str, req_s: float, round_: int | None = None, workers: int = 1) -> dict[str, Any]:
    path = system + ("" if workers == 1 else f", {workers} workers")
    row: dict[str, Any] = {"system": system, "concurrency": 32, "workers": workers, "req_s": req_s}
    if round_ is not None:
        row["round"] = round_
        path += f" (round {round_})"
    return {**row, "path": path}


def test_without_rounds_the_best_row_is_set_against_the_highest_ceiling() -> None:
    rows = [ceiling(300), ceiling(330), http("gateway", 264), http("direct", 250), http("litserve", 200)]
    out = targets("minilm", {"rows": rows})
    assert out["gateway_c32_of_ceiling"]["value"] == 0.8  # 264 / 330, not / 300
    assert out["gateway_c32_of_ceiling"]["met"] is False
    assert out["gateway_c32_vs_best_peer"]["value"] == 1.32
    assert out["gateway_c32_vs_best_peer"]["met"] is True
    assert out["direct_c32_vs_best_peer"]["met"] is False  # 1.25
    # what the peer target asks of the ceiling: 1.3 x 200 / 330
    vs_peer = out["gateway_c32_vs_best_peer"]
    assert vs_peer["peer_share_of_ceiling"] == pytest.approx(200 / 330, abs=1e-3)
    assert vs_peer["asks_share_of_ceiling"] == pytest.approx(1.3 * 200 / 330, abs=1e-3)
    assert "1.3x asks for 79%" in describe("gateway_c32_vs_best_peer", vs_peer)


def test_rounds_divide_each_row_by_the_higher_ceiling_around_it_and_take_the_median() -> None:
    rows = [
        ceiling(400),  # a fast minute elsewhere in the run: only the unpaired share uses it
        ceiling(300, 1),
        ceiling(250, 2),
        ceiling(320, 3),
        ceiling(300, 4),  # the closing ceiling after round 3
        http("gateway", 270, 1),  # / max(300, 250): 0.9
        http("gateway", 200, 2),  # / max(250, 320): 0.625, not 0.8 against the sagging 250
        http("gateway", 304, 3),  # / max(320, 300): 0.95
        http("gateway", 280),  # the single c=32 row
        http("litserve", 180),
        http("litserve", 190, 1),  # the peer's best row counts, rounds included
    ]
    got = targets("minilm", {"rows": rows})["gateway_c32_of_ceiling"]
    assert got["rounds"] == [0.9, 0.625, 0.95]
    assert got["value"] == 0.9
    assert got["met"] is True
    assert got["single_row_of_highest_ceiling"] == 0.7  # 280 / 400
    peer = targets("minilm", {"rows": rows})["gateway_c32_vs_best_peer"]
    assert peer["best_peer"] == "litserve (round 1)"
    assert peer["value"] == pytest.approx(270 / 190, abs=1e-3)  # median req/s of the rounds
    # against the ceiling the median share implies (270 / 0.9 = 300): 190 / 300
    assert peer["peer_share_of_ceiling"] == pytest.approx(190 / 300, abs=1e-3)


def test_rounds_pick_the_worker_shape_with_the_higher_median() -> None:
    rows = [
        ceiling(300, 1, pair_workers=1),
        ceiling(300, 2, pair_workers=1),
        ceiling(280, 1, pair_workers=2),
        ceiling(280, 2, pair_workers=2),
        http("direct", 240, 1),
        http("direct", 246, 2),  # median 0.81
        http("direct", 250, 1, workers=2),
        http("direct", 260, 2, workers=2),  # median of 0.893 and 0.929 (no closing ceiling here)
    ]
    got = targets("minilm", {"rows": rows})["direct_c32_of_ceiling"]
    assert got["row"] == "direct, 2 workers (2 rounds)"
    assert got["value"] == pytest.approx((0.893 + 0.929) / 2, abs=1e-3)
    assert "direct_c32_vs_best_peer" not in targets("minilm", {"rows": rows})  # no peer ran


def test_mlp_targets() -> None:
    rows = [{"system": "gateway", "concurrency": 1, "p50_ms": 1.7, "req_s": 500}]
    out = targets("mlp", {"rows": rows, "cold_start": {"first_request_s": 2.4}})
    assert out["gateway_p50_c1_ms"]["met"] is True
    assert out["cold_start_s"]["met"] is False


def test_batch_stats_between_two_scrapes() -> None:
    def scrape(at: float, seconds: float, units: float, batches: float) -> dict[str, float]:
        return {
            "at": at,
            "aicloud_batch_seconds_sum": seconds,
            "aicloud_batch_size_sum": units,
            "aicloud_batch_size_count": batches,
        }

    # 10 s, 2 workers: 100 batches of 16 that ran 19 s in all -> each worker busy 95% of the time
    assert batch_stats(scrape(5, 1, 32, 2), scrape(15, 20, 1632, 102), 2) == {
        "batch_mean": 16.0,
        "workers_busy": 0.95,
    }
    assert batch_stats(scrape(5, 1, 32, 2), scrape(15, 1, 32, 2), 2) == {}  # no batch ran
