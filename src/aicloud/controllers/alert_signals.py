"""The built-in alert signals (docs/alerts.md), in one registry.

Each signal is a pure function of a :class:`Facts` (what the store and the gateway know now) and
the rule's parameters; the alert controller supplies the real Facts, tests a fake. A signal
returns None when there is no data (no calls in the window): a rule on it does not hold then.

Not here yet: ``deployment.replica_restarts`` (restarts are not recorded per replica with a
time), drift and live accuracy (they come with the drift reports' scheduling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol


class Facts(Protocol):
    """What a signal may read. Every method answers for one workspace."""

    def latency_p99_ms(self, workspace_id: str, deployment: str, window_s: float) -> float | None:
        """p99 latency of the deployment's calls over the window (None: no calls)."""

    def calls(self, workspace_id: str, deployment: str, window_s: float) -> tuple[int, int]:
        """``(requests, errors)`` over the window; an error is a 5xx or no answer."""

    def ready_replicas(self, workspace_id: str, deployment: str) -> int: ...

    def failed_jobs(self, workspace_id: str, since: datetime, name: str | None) -> int:
        """Jobs that failed since ``since`` (only those named ``name`` when given)."""

    def spend(self, workspace_id: str, since: datetime) -> float:
        """What the workspace's usage cost since ``since``."""


@dataclass(frozen=True)
class Signal:
    name: str
    help: str
    #: which rule parameter names a deployment/job: "deployment" required, "job" optional
    needs_deployment: bool
    takes_job: bool
    #: True: the rule's ``window`` applies (default DEFAULT_WINDOW_S)
    windowed: bool
    fn: Callable[[Facts, str, dict[str, Any], datetime], float | None]


#: The window of a windowed signal whose rule names none.
DEFAULT_WINDOW_S = 300.0


def _window(params: dict[str, Any]) -> float:
    return float(params.get("window_s") or DEFAULT_WINDOW_S)


def _p99(facts: Facts, ws: str, params: dict[str, Any], now: datetime) -> float | None:
    return facts.latency_p99_ms(ws, str(params["deployment"]), _window(params))


def _error_rate(facts: Facts, ws: str, params: dict[str, Any], now: datetime) -> float | None:
    requests, errors = facts.calls(ws, str(params["deployment"]), _window(params))
    return errors / requests if requests else None


def _ready(facts: Facts, ws: str, params: dict[str, Any], now: datetime) -> float | None:
    return float(facts.ready_replicas(ws, str(params["deployment"])))


def _failed(facts: Facts, ws: str, params: dict[str, Any], now: datetime) -> float | None:
    since = now - timedelta(seconds=_window(params))
    return float(facts.failed_jobs(ws, since, params.get("job")))


def _spend(facts: Facts, ws: str, params: dict[str, Any], now: datetime) -> float | None:
    return facts.spend(ws, now - timedelta(days=1))


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal(
            "deployment.p99_latency_ms",
            "p99 latency of the calls over the window, ms",
            True,
            False,
            True,
            _p99,
        ),
        Signal(
            "deployment.error_rate",
            "share of calls over the window answered 5xx or not at all (0..1)",
            True,
            False,
            True,
            _error_rate,
        ),
        Signal("deployment.ready_replicas", "replicas ready now", True, False, False, _ready),
        Signal(
            "jobs.failed", "jobs failed over the window (job: only that name)", False, True, True, _failed
        ),
        Signal("workspace.spend_per_day", "usage cost over the last 24 hours", False, False, False, _spend),
    )
}


def evaluate(
    facts: Facts, signal: str, workspace_id: str, params: dict[str, Any], now: datetime
) -> float | None:
    """The signal's value now. Raises KeyError for an unknown signal (rules are validated on create)."""
    return SIGNALS[signal].fn(facts, workspace_id, params, now)
