"""The autoscaling policy, table-driven: no processes, no clocks, only numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from aicloud.controllers.autoscale import AutoscaleConfig, AutoscaleState, decide, trim

NOW = 1000.0


def steady(value: float, seconds: float, *, step: float = 1.0, end: float = NOW) -> list[tuple[float, float]]:
    """One sample every ``step`` seconds over the last ``seconds``, all ``value``."""
    n = int(seconds / step)
    return [(end - seconds + i * step, value) for i in range(n + 1)]


@dataclass
class Case:
    name: str
    current: int
    samples: list[tuple[float, float]]
    expect: int
    cfg: dict[str, float] = field(default_factory=dict)
    last_request: float = NOW  # a request just now
    start_requested: bool = False
    last_change: float = -math.inf
    reason: str = ""  # a substring of the decision's reason


BASE = {"min_replicas": 1, "max_replicas": 5, "target_inflight": 2.0}

CASES = [
    Case("steady at target", 2, steady(4, 60), 2, reason="steady"),
    Case("no samples keeps the minimum", 1, [], 1),
    Case("upscale at once by default", 1, steady(8, 1), 4, reason="needs 4"),
    Case("ceil of the mean", 1, steady(5, 1), 3),
    Case("the mean is over the short window only", 1, [*steady(0, 60), (NOW - 0.5, 6), (NOW, 6)], 2),
    Case("upscale clamped to max", 1, steady(100, 10), 5),
    Case("below min goes to min at once", 0, [], 2, cfg={"min_replicas": 2}, reason="minimum"),
    Case("above max goes to max at once", 7, steady(100, 60), 5, reason="maximum"),
    Case(
        "upscale delay not yet covered by samples",
        1,
        steady(8, 5),
        1,
        cfg={"upscale_delay_s": 10},
        reason="upscale delay",
    ),
    Case("upscale delay: need persisted", 1, steady(8, 12), 4, cfg={"upscale_delay_s": 10}),
    Case(
        "upscale delay: a burst inside the delay is not enough",
        1,
        steady(2, 12, end=NOW - 3) + steady(8, 2),
        1,
        cfg={"upscale_delay_s": 10},
    ),
    Case(
        "upscale delay: only to the level that persisted",
        1,
        steady(4, 12, end=NOW - 2) + steady(10, 1.5),
        2,
        cfg={"upscale_delay_s": 10},
    ),
    Case("downscale after the delay", 4, steady(2, 40), 1, reason="at most 1"),
    Case("downscale waits for samples to cover the delay", 4, steady(2, 20), 4, reason="downscale delay"),
    Case(
        "downscale waits after a recent change", 4, steady(2, 40), 4, last_change=NOW - 10, reason="recently"
    ),
    Case(
        "downscale only to the peak need within the delay",
        4,
        [*steady(2, 40), (NOW - 15, 6)],
        3,
    ),
    Case("downscale never below min", 4, steady(0, 40), 2, cfg={"min_replicas": 2}),
    Case(
        "min 0 but not idle keeps one", 2, steady(0, 40), 1, cfg={"min_replicas": 0}, last_request=NOW - 100
    ),
    Case(
        "scale to zero after the idle timeout",
        1,
        steady(0, 40),
        0,
        cfg={"min_replicas": 0},
        last_request=NOW - 301,
        reason="scale to zero",
    ),
    Case(
        "scale to zero is not delayed by the downscale delay",
        1,
        steady(0, 1),
        0,
        cfg={"min_replicas": 0},
        last_request=NOW - 301,
        last_change=NOW - 1,
    ),
    Case("no scale to zero with min 1", 1, steady(0, 40), 1, last_request=NOW - 10_000),
    Case(
        "no scale to zero while requests are in flight",
        1,
        steady(1, 40),
        1,
        cfg={"min_replicas": 0},
        last_request=NOW - 301,
    ),
    Case("stays at zero when idle", 0, steady(0, 40), 0, cfg={"min_replicas": 0}, last_request=NOW - 301),
    Case(
        "start requested at zero: one at once, whatever the delays",
        0,
        [],
        1,
        cfg={"min_replicas": 0, "upscale_delay_s": 60},
        last_request=NOW - 1000,
        start_requested=True,
        reason="waiting",
    ),
    Case(
        "start requested with many held requests",
        0,
        steady(6, 1),
        3,
        cfg={"min_replicas": 0},
        last_request=NOW - 1000,
        start_requested=True,
    ),
    Case(
        "a recent request at zero brings one back",
        0,
        steady(0, 40),
        1,
        cfg={"min_replicas": 0},
        last_request=NOW - 1,
    ),
    Case("fractional target", 1, steady(1, 5), 2, cfg={"target_inflight": 0.5}),
    Case("exactly at target does not scale up", 2, steady(4, 5), 2),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    cfg = AutoscaleConfig(**{**BASE, **case.cfg})  # type: ignore[arg-type]
    state = AutoscaleState(
        current=case.current,
        samples=list(case.samples),
        last_request=case.last_request,
        start_requested=case.start_requested,
        last_change=case.last_change,
    )
    decision = decide(cfg, state, NOW)
    assert decision.desired == case.expect, decision.reason
    assert case.reason in decision.reason


def test_decide_is_pure() -> None:
    cfg = AutoscaleConfig(**BASE)  # type: ignore[arg-type]
    samples = steady(8, 10)
    state = AutoscaleState(current=1, samples=list(samples), last_request=NOW)
    assert decide(cfg, state, NOW) == decide(cfg, state, NOW)
    assert state.samples == samples


def test_no_flapping_under_a_noisy_load() -> None:
    """Load alternating around the boundary: up at once, then never down while it persists."""
    cfg = AutoscaleConfig(min_replicas=1, max_replicas=10, target_inflight=2, downscale_delay_s=30)
    state = AutoscaleState(current=1, last_request=0.0)
    changes = []
    t = 0.0
    while t < 300:
        state.samples.append((t, 6.0 if int(t) % 20 < 10 else 1.0))
        state.samples = trim(state.samples, t, cfg)
        state.last_request = t
        d = decide(cfg, state, t)
        if d.desired != state.current:
            changes.append((t, d.desired))
            state.current, state.last_change = d.desired, t
        t += 0.5
    # Up to 3 once the burst starts; the lulls (10 s) are shorter than the downscale delay.
    assert changes and changes[0][1] == 3
    assert all(desired >= 3 for _, desired in changes)
    assert len(changes) <= 2


def test_downscale_then_scale_to_zero_over_time() -> None:
    cfg = AutoscaleConfig(
        min_replicas=0, max_replicas=4, target_inflight=1, downscale_delay_s=30, idle_timeout_s=120
    )
    state = AutoscaleState(current=4, last_request=0.0, last_change=0.0)
    history: list[tuple[float, int]] = []
    t = 0.0
    while t <= 200:
        state.samples.append((t, 4.0 if t < 5 else 0.0))
        state.samples = trim(state.samples, t, cfg)
        if t < 5:
            state.last_request = t
        d = decide(cfg, state, t)
        if d.desired != state.current:
            history.append((t, d.desired))
            state.current, state.last_change = d.desired, t
        t += 1.0
    assert [desired for _, desired in history] == [1, 0]
    assert 30 <= history[0][0] <= 40  # after the downscale delay, not before
    assert history[1][0] >= 4 + 120  # after the idle timeout


def test_trim_keeps_the_horizon() -> None:
    cfg = AutoscaleConfig(min_replicas=1, max_replicas=2, target_inflight=1, downscale_delay_s=30)
    samples = [(float(t), 1.0) for t in range(100)]
    kept = trim(samples, 99.0, cfg)
    assert kept[0] == (68.0, 1.0)  # the newest sample older than the horizon shows the coverage
    assert kept[-1] == (99.0, 1.0)
    assert len(kept) == 32


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"min_replicas": -1}, "min_replicas"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
        ({"target_inflight": 0}, "target_inflight"),
        ({"downscale_delay_s": -1}, "downscale_delay_s"),
    ],
)
def test_config_is_validated(fields: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AutoscaleConfig(**{**BASE, **fields})  # type: ignore[arg-type]


def test_config_from_spec_defaults() -> None:
    cfg = AutoscaleConfig.from_spec({"model": "m"})
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_inflight) == (1, 1, 8.0)
    assert (cfg.upscale_delay_s, cfg.downscale_delay_s, cfg.idle_timeout_s) == (0.0, 30.0, 300.0)
    cfg = AutoscaleConfig.from_spec(
        {"min_replicas": 0, "max_replicas": 3, "target_inflight": 2, "idle_timeout_s": 5}
    )
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_inflight, cfg.idle_timeout_s) == (0, 3, 2.0, 5.0)
