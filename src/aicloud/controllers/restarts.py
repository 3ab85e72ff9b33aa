"""The restart policy of jobs (``max_restarts``), as pure functions the job controller calls.

A running job whose process ended badly is started again (same job, same run, ``attempt + 1``)
instead of failing when all of these hold:

* nobody asked to cancel it;
* its process failed: it exited with a code other than 0, or the executor lost it;
* it has restarts left: ``job.attempt < spec.max_restarts``.

The new attempt resumes from the job's latest checkpoint (the bootstrap fetches it). The usage
of all attempts adds up (:func:`merge_usage`), so a restarted job's CPU seconds and cost
include the work that was lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aicloud.entities import Job
from aicloud.executors.base import ExitInfo

__all__ = ["max_restarts", "merge_usage", "restart_message", "should_restart"]


def max_restarts(spec: Mapping[str, Any]) -> int:
    """The spec's ``max_restarts`` (0 when absent or unreadable)."""
    try:
        return max(0, int(spec.get("max_restarts") or 0))
    except (TypeError, ValueError):
        return 0


def should_restart(job: Job, info: ExitInfo) -> bool:
    """Whether the controller should start ``job`` again rather than end it; see the module docstring."""
    if job.cancel_requested or info.state == "running":
        return False
    failed = info.state == "lost" or (info.state == "exited" and info.exit_code != 0)
    return failed and job.attempt < max_restarts(job.spec)


def restart_message(job: Job, info: ExitInfo) -> str:
    """What the job's ``message`` says while its next attempt runs."""
    why = "was lost" if info.state == "lost" else f"exited with code {info.exit_code}"
    return f"restart {job.attempt + 1} of {max_restarts(job.spec)}: attempt {job.attempt} {why}"


def merge_usage(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Usage of all attempts so far: CPU and wall seconds add up, the peak RSS is the largest,
    the exit code is the latest attempt's. Only the measured keys are carried (no prices)."""
    merged: dict[str, Any] = dict(current)
    for key in ("cpu_seconds", "wall_seconds"):
        if key in previous:
            merged[key] = round(float(previous[key]) + float(current.get(key) or 0.0), 3)
    if "peak_rss_bytes" in previous:
        merged["peak_rss_bytes"] = max(
            int(previous["peak_rss_bytes"]), int(current.get("peak_rss_bytes") or 0)
        )
    return merged
