"""The autoscaling policy: a pure function from in-flight samples to a replica count.

``decide(cfg, state, now)`` sees the replicas of the current generation (``current``),
samples ``(time, in-flight requests)`` of the deployment (held requests included), the time
of the last request, whether the gateway holds a request for a cold deployment, and when the
desired count last changed. It returns :class:`Decision` ``(desired, reason)``:

* **need**: ``ceil(mean in-flight over the last window_s / target_inflight)``.
* **bounds**: ``[floor, max_replicas]``, where ``floor`` is ``min_replicas``, except that a
  deployment with ``min_replicas == 0`` keeps one replica until ``idle_timeout_s`` passed
  without a request (then ``floor`` is 0: scale to zero).
* **cold start**: ``start_requested`` with ``current == 0`` asks for at least one replica now,
  whatever the delays.
* **upscale** (need above current): at once when ``upscale_delay_s`` is 0; otherwise only
  to the level every sample of the last ``upscale_delay_s`` needed (the need persisted), and
  only once the samples cover that long.
* **downscale** (need below current): only to the highest need seen over the last
  ``downscale_delay_s`` (so a short lull never drops capacity), only once the samples cover
  that long, and only ``downscale_delay_s`` after the last change (hysteresis: no flapping).
  Scale to zero after the idle timeout is not delayed further.

The stateful layer (the deployment controller) appends a sample per pass, keeps those
newer than :attr:`AutoscaleConfig.horizon_s` (:func:`trim`), and records ``last_change``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AutoscaleConfig", "AutoscaleState", "Decision", "decide", "split", "trim"]

DEFAULT_WINDOW_S = 2.0


@dataclass(frozen=True)
class AutoscaleConfig:
    min_replicas: int
    max_replicas: int
    target_inflight: float
    upscale_delay_s: float = 0.0
    downscale_delay_s: float = 30.0
    idle_timeout_s: float = 300.0
    window_s: float = DEFAULT_WINDOW_S  # the in-flight mean is taken over this much history

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, not {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= 1 and >= min_replicas ({self.min_replicas})"
            )
        if not self.target_inflight > 0:
            raise ValueError(f"target_inflight must be > 0, not {self.target_inflight}")
        for name in ("upscale_delay_s", "downscale_delay_s", "idle_timeout_s", "window_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> AutoscaleConfig:
        """The config of a deployment spec (defaults as ``schemas.serving.ScalingSpec``)."""
        lo = int(spec.get("min_replicas", 1))
        return cls(
            min_replicas=lo,
            max_replicas=max(int(spec.get("max_replicas", max(lo, 1))), lo, 1),
            target_inflight=float(spec.get("target_inflight", 8)),
            upscale_delay_s=float(spec.get("upscale_delay_s", 0)),
            downscale_delay_s=float(spec.get("downscale_delay_s", 30)),
            idle_timeout_s=float(spec.get("idle_timeout_s", 300)),
        )

    @property
    def horizon_s(self) -> float:
        """How much sample history ``decide`` looks at."""
        return max(self.window_s, self.upscale_delay_s, self.downscale_delay_s)


@dataclass
class AutoscaleState:
    current: int  # replicas of the current generation (starting or ready, not draining)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (time, in-flight), oldest first
    last_request: float = -math.inf
    start_requested: bool = False
    last_change: float = -math.inf  # when the desired count last changed


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str


def trim(samples: list[tuple[float, float]], now: float, cfg: AutoscaleConfig) -> list[tuple[float, float]]:
    """The samples ``decide`` still needs, plus the newest older one (it shows how far back
    the history reaches)."""
    cutoff = now - cfg.horizon_s
    keep = [s for s in samples if s[0] >= cutoff]
    older = [s for s in samples if s[0] < cutoff]
    return older[-1:] + keep


def _need(inflight: float, cfg: AutoscaleConfig) -> int:
    return math.ceil(max(inflight, 0.0) / cfg.target_inflight - 1e-9)


def _since(samples: Iterable[tuple[float, float]], start: float) -> list[float]:
    return [v for t, v in samples if t > start]


def _covers(samples: list[tuple[float, float]], now: float, span: float) -> bool:
    return span <= 0 or (bool(samples) and samples[0][0] <= now - span)


def decide(cfg: AutoscaleConfig, state: AutoscaleState, now: float) -> Decision:
    """The replica count to aim for now; see the module docstring."""
    idle_for = now - state.last_request
    idle = idle_for >= cfg.idle_timeout_s and not state.start_requested
    floor = cfg.min_replicas if cfg.min_replicas > 0 or idle else 1
    ceiling = cfg.max_replicas

    def clamp(n: int) -> int:
        return min(max(n, floor), ceiling)

    samples = sorted(state.samples)
    window = _since(samples, now - cfg.window_s)
    mean = sum(window) / len(window) if window else 0.0
    need = clamp(_need(mean, cfg))
    current = state.current

    if state.start_requested and current == 0:
        return Decision(max(need, 1), "a request is waiting for a replica")
    if current < floor:
        return Decision(floor, f"below the minimum of {floor}")
    if current > ceiling:
        return Decision(ceiling, f"above the maximum of {ceiling}")
    if need > current:
        if cfg.upscale_delay_s <= 0:
            return Decision(need, f"mean in-flight {mean:.2f} needs {need}")
        if not _covers(samples, now, cfg.upscale_delay_s):
            return Decision(current, "waiting for the upscale delay")
        recent = _since(samples, now - cfg.upscale_delay_s)
        sustained = clamp(min((_need(v, cfg) for v in recent), default=need))
        sustained = min(sustained, need)
        if sustained > current:
            return Decision(sustained, f"in-flight needed {sustained} for {cfg.upscale_delay_s:g}s")
        return Decision(current, "waiting for the upscale delay")
    if need < current:
        if need == 0:
            return Decision(0, f"no request for {idle_for:.0f}s: scale to zero")
        if not _covers(samples, now, cfg.downscale_delay_s):
            return Decision(current, "waiting for the downscale delay")
        if now - state.last_change < cfg.downscale_delay_s:
            return Decision(current, "changed recently: waiting for the downscale delay")
        recent = _since(samples, now - cfg.downscale_delay_s)
        peak = clamp(max((_need(v, cfg) for v in recent), default=need))
        lower = max(peak, need)
        if lower < current:
            return Decision(lower, f"in-flight needed at most {lower} for {cfg.downscale_delay_s:g}s")
        return Decision(current, "waiting for the downscale delay")
    return Decision(current, "steady")


def split(desired: int, weights: Mapping[Any, int]) -> dict[Any, int]:
    """How many of ``desired`` replicas each served version gets (a canary's traffic weights): its
    share by weight, rounded, and at least one while ``desired`` is above 0, so that a version with
    a small weight still has a replica to take its share. The sum may exceed ``desired`` by the
    versions rounded up to one. Zero replicas each at ``desired`` 0 (scaled to zero)."""
    total = sum(w for w in weights.values() if w > 0)
    if desired <= 0 or total <= 0:
        return {k: 0 for k in weights}
    return {k: max(1, round(desired * w / total)) if w > 0 else 0 for k, w in weights.items()}
