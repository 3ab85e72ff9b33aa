"""How bench/serving_report.py turns result rows into the issue #4 targets (rows made up here)."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from interleave import idle_between, run_slices, share
from loadgen import counted
from replica_metrics import batch_stats
from rich.console import Console
from serving_report import describe, slices_table, targets


def ceiling(req_s: float) -> dict[str, Any]:
    return {"system": "ceiling", "path": "ceiling", "batch": 32, "workers": 2, "req_s": req_s}


def http(system: str, req_s: float, workers: int = 1) -> dict[str, Any]:
    path = system + ("" if workers == 1 else f", {workers} workers")
    return {"system": system, "path": path, "concurrency": 32, "workers": workers, "req_s": req_s}


def block(name: str, workers: int = 1, **rates: list[float]) -> list[dict[str, Any]]:
    """Slice rows of one block: ``system=[req/s per cycle]`` (``ceiling`` among them)."""
    return [
        {"block": name, "cycle": k, "system": system, "workers": workers, "req_s": v, "idle": 0.05}
        for system, values in rates.items()
        for k, v in enumerate(values, 1)
    ]


def test_without_slices_the_best_row_is_set_against_the_highest_ceiling() -> None:
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


def test_slices_give_the_ratio_of_mean_rates_over_the_same_cycles() -> None:
    rows = [
        ceiling(400),  # a fast minute elsewhere in the run: the slices do not use it
        http("gateway", 280),  # the single c=32 row of the sweep: not used either
        *block("aicloud", ceiling=[300, 250, 320, 310], gateway=[270, 200, 290, 280], direct=[285, 240]),
    ]
    got = targets("minilm", {"rows": rows})
    gw = got["gateway_c32_of_ceiling"]
    assert gw["value"] == pytest.approx(260 / 295, abs=1e-3)  # not the mean of the per-cycle shares
    assert gw["cycles"] == [0.9, 0.8, 0.906, 0.903]
    assert gw["ci95"][0] <= gw["value"] <= gw["ci95"][1]
    assert gw["ci95"][0] >= 0.8 and gw["ci95"][1] <= 0.906  # within the cycles' own shares
    assert (gw["req_s"], gw["ceiling_req_s"], gw["met"]) == (260.0, 295.0, True)
    assert gw["row"] == "gateway in aicloud (4 cycles)"
    direct = got["direct_c32_of_ceiling"]  # two cycles ran: only their ceilings count
    assert direct["value"] == pytest.approx(525 / 550, abs=1e-3)
    assert "gateway_c32_vs_best_peer" not in got  # no peer ran
    assert "(95% CI " in describe("gateway_c32_of_ceiling", gw)


def test_the_peer_target_compares_shares_each_against_its_own_ceilings() -> None:
    rows = [
        *block("aicloud", ceiling=[300, 300], gateway=[261, 267]),  # share 0.88
        *block("litserve", ceiling=[200, 200], litserve=[140, 140]),  # a slower minute: share 0.7
        *block("bentoml", ceiling=[300, 300], bentoml=[180, 180]),  # faster req/s, share 0.6
    ]
    got = targets("minilm", {"rows": rows})
    assert "gateway_c32_vs_tuned_peer" not in got  # no peer ran tuned: nothing to compare beyond it
    peer = got["gateway_c32_vs_best_peer"]
    assert peer["best_peer"] == "litserve in litserve (2 cycles)"
    assert peer["value"] == pytest.approx(0.88 / 0.7, abs=1e-3)
    assert peer["raw_req_s_ratio"] == pytest.approx(264 / 140, abs=1e-3)
    assert (peer["peer_share_of_ceiling"], peer["asks_share_of_ceiling"]) == (0.7, 0.91)
    assert peer["met"] is False
    assert peer["ci95"][0] < peer["value"] < peer["ci95"][1]  # the spread of the gateway cycles


def test_slices_pick_the_worker_shape_with_the_higher_share() -> None:
    rows = [
        *block("aicloud", ceiling=[300, 300], direct=[240, 246]),
        *block("aicloud, 2 workers", workers=2, ceiling=[280, 280], direct=[250, 260]),
        *block("litserve", ceiling=[300, 300], litserve=[200, 200]),
        *block("litserve, 2 workers", workers=2, ceiling=[300, 300], litserve=[150, 150]),
    ]
    got = targets("minilm", {"rows": rows})
    assert got["direct_c32_of_ceiling"]["row"] == "direct in aicloud, 2 workers (2 cycles)"
    assert got["direct_c32_of_ceiling"]["value"] == pytest.approx(255 / 280, abs=1e-3)
    assert got["direct_c32_vs_best_peer"]["best_peer"] == "litserve in litserve (2 cycles)"
    assert slices_table({"rows": rows}) is not None
    assert slices_table({"rows": [ceiling(300)]}) is None


def test_the_peer_target_is_set_against_the_peers_as_benchmarks_md_runs_them() -> None:
    """One worker with both threads is the BENCHMARKS.md configuration, where the 1.3 comes from; a
    peer tuned to 2 workers is compared too, as information that no target reads."""
    rows = [
        *block("aicloud, 2 workers", workers=2, ceiling=[300, 300], gateway=[267, 267]),  # 0.89
        *block("litserve", ceiling=[300, 300], litserve=[186, 186]),  # 0.62
        *block("litserve, 2 workers", workers=2, ceiling=[300, 300], litserve=[219, 219]),  # 0.73
        *block("rayserve, 2 workers", workers=2, ceiling=[300, 300], rayserve=[111, 111]),
    ]
    got = targets("minilm", {"rows": rows})
    target, tuned = got["gateway_c32_vs_best_peer"], got["gateway_c32_vs_tuned_peer"]
    assert target["best_peer"] == "litserve in litserve (2 cycles)"
    assert target["value"] == pytest.approx(0.89 / 0.62, abs=1e-3)
    assert target["met"] is True
    assert tuned["best_peer"] == "litserve in litserve, 2 workers (2 cycles)"
    assert tuned["value"] == pytest.approx(0.89 / 0.73, abs=1e-3)
    assert tuned["met"] is None
    line = describe("gateway_c32_vs_tuned_peer", tuned)
    assert "#4 compared" in line and line.endswith("information")
    assert "#4 target" in describe("gateway_c32_vs_best_peer", target)
    # with the sweep's single rows (--cycles 0), a 2-worker peer row is not the reference either
    single = [ceiling(330), http("gateway", 290), http("litserve", 200), http("litserve", 260, workers=2)]
    assert targets("minilm", {"rows": single})["gateway_c32_vs_best_peer"]["value"] == 1.45


def test_the_fastest_ceiling_shape_of_a_block_is_its_ceiling() -> None:
    shapes = {"ceiling, 2 x 32": [300, 290], "ceiling, 2 x 16": [320, 310]}
    rows = block("aicloud", **shapes, gateway=[270, 270])
    got = targets("minilm", {"rows": rows})["gateway_c32_of_ceiling"]
    assert got["ceiling"] == "ceiling, 2 x 16"
    assert got["value"] == pytest.approx(270 / 315, abs=1e-3)  # not 270 / 295
    assert "ceiling, 2 x 16" not in {k.split("_c32")[0] for k in targets("minilm", {"rows": rows})}


def test_run_slices_reverses_the_order_every_other_cycle() -> None:
    ran: list[str] = []

    def runner(name: str, req_s: float) -> Any:
        return lambda: ran.append(name) or {"req_s": req_s}

    rows = run_slices(
        Console(file=io.StringIO()),
        "b",
        {
            "ceiling": runner("ceiling", 300),
            "gateway": runner("gateway", 270),
            "direct": runner("direct", 280),
        },
        cycles=4,
        workers=2,
    )
    assert ran == ["ceiling", "gateway", "direct", "direct", "gateway", "ceiling"] * 2
    assert [r["cycle"] for r in rows] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert {(r["block"], r["workers"]) for r in rows} == {("b", 2)}
    assert share(rows, "b", "gateway")["share"] == 0.9  # type: ignore[index]
    # every system's mean position in the block is the same (5.5): a linear drift cancels
    positions = {name: sum(i for i, n in enumerate(ran) if n == name) / 4 for name in set(ran)}
    assert set(positions.values()) == {5.5}


def test_idle_share_of_the_cores_between_two_readings() -> None:
    assert idle_between((100, 1000), (150, 1200)) == 0.25
    assert idle_between(None, (150, 1200)) is None
    assert idle_between((100, 1000), (100, 1000)) is None


def test_the_load_generator_counts_every_answer_that_arrives_in_the_window() -> None:
    # a request sent during the warm-up whose answer comes after it counts (its start does not matter)
    assert counted(1.05, warm_until=1.0, stop_at=9.0)
    assert counted(9.0, warm_until=1.0, stop_at=9.0)
    assert not counted(0.99, warm_until=1.0, stop_at=9.0)
    assert not counted(9.01, warm_until=1.0, stop_at=9.0)


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
