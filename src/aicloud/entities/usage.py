"""What a job cost: allocated resources * wall time * a price table. Pure functions, no I/O.

A job that ends records its measured ``usage`` (``exit_code``, ``cpu_seconds``,
``peak_rss_bytes``, ``wall_seconds``). :func:`with_cost` adds the priced breakdown, computed
once, when the job ends, so that a later change of prices does not rewrite history::

    cpu_hours = workers * cpus * wall_hours        (cpus and gpus are per worker)
    gpu_hours = workers * gpus * wall_hours
    gb_hours  = peak_rss_GiB * wall_hours          (measured peak resident memory, GiB = 2**30 bytes)
    cost      = cpu_hours * price_cpu_hour + gpu_hours * price_gpu_hour + gb_hours * price_gb_hour

CPU and GPU are charged for what the job *reserved* (its spec), whether it used it or not, as
a cloud bills a machine; memory for what it *used* at its peak, since jobs reserve none.
``cpu_seconds`` (measured) is kept alongside for comparison. Jobs that failed or were
cancelled cost too: they held the machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["COST_KEYS", "DIGITS", "GIB", "PriceSettings", "Prices", "allocation", "job_cost", "with_cost"]

GIB = 2**30
COST_KEYS = ("cpu_hours", "gpu_hours", "gb_hours", "cost", "currency", "prices")
"""The keys :func:`with_cost` adds to a job's ``usage``."""
DIGITS = 9  # stored numbers are rounded to 1e-9 (of an hour, of a currency unit)


class PriceSettings(Protocol):
    """Anything with the four price settings (``aicloud.config.Settings``)."""

    @property
    def price_cpu_hour(self) -> float: ...
    @property
    def price_gpu_hour(self) -> float: ...
    @property
    def price_gb_hour(self) -> float: ...
    @property
    def currency(self) -> str: ...


@dataclass(frozen=True)
class Prices:
    """A price table: per CPU-hour, GPU-hour and GB-hour (GiB of peak memory * hour)."""

    cpu_hour: float = 0.0
    gpu_hour: float = 0.0
    gb_hour: float = 0.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("cpu_hour", "gpu_hour", "gb_hour"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"price per {name.replace('_', '-')} must be >= 0, not {value!r}")

    @classmethod
    def of(cls, settings: PriceSettings) -> Prices:
        return cls(
            cpu_hour=settings.price_cpu_hour,
            gpu_hour=settings.price_gpu_hour,
            gb_hour=settings.price_gb_hour,
            currency=settings.currency,
        )

    def as_dict(self) -> dict[str, float]:
        return {"cpu_hour": self.cpu_hour, "gpu_hour": self.gpu_hour, "gb_hour": self.gb_hour}


def _count(value: Any, default: int) -> int:
    """A non-negative whole count from a spec field, or ``default`` when it is missing or odd."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return max(int(value), 0)


def allocation(spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(workers, cpus per worker, gpus per worker)`` a job reserved, read defensively from its spec.

    Missing fields take the defaults of a job spec: 1 worker, 1 CPU, 0 GPUs.
    """
    workers = _count(spec.get("workers"), 1) or 1
    return workers, _count(spec.get("cpus"), 1), _count(spec.get("gpus"), 0)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return 0.0
    return float(value)


def job_cost(usage: Mapping[str, Any], spec: Mapping[str, Any], prices: Prices) -> dict[str, Any]:
    """The priced breakdown of one job's ``usage``: the :data:`COST_KEYS`.

    Unknown measurements (a lost job without a wall time) count as zero.
    """
    workers, cpus, gpus = allocation(spec)
    wall_h = _number(usage.get("wall_seconds")) / 3600
    cpu_hours = workers * cpus * wall_h
    gpu_hours = workers * gpus * wall_h
    gb_hours = _number(usage.get("peak_rss_bytes")) / GIB * wall_h
    cost = cpu_hours * prices.cpu_hour + gpu_hours * prices.gpu_hour + gb_hours * prices.gb_hour
    return {
        "cpu_hours": round(cpu_hours, DIGITS),
        "gpu_hours": round(gpu_hours, DIGITS),
        "gb_hours": round(gb_hours, DIGITS),
        "cost": round(cost, DIGITS),
        "currency": prices.currency,
        "prices": prices.as_dict(),
    }


def with_cost(usage: Mapping[str, Any], spec: Mapping[str, Any], prices: Prices) -> dict[str, Any]:
    """``usage`` plus its priced breakdown (what a job stores when it ends)."""
    return {**usage, **job_cost(usage, spec, prices)}
