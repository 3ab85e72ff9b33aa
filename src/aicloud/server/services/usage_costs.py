"""Serving and storage costs in the usage report (docs/usage.md "Serving", "Storage").

Serving: each replica that ran in the period is priced like a job of one worker, for the part of
its life inside ``[since, until)`` (to now while it runs)::

    replica_hours = overlap of [started, ended or now) with [since, until), in hours
    cpu_hours     = cpus * replica_hours           (the deployment's spec when it started)
    gpu_hours     = gpus * replica_hours
    gb_hours      = memory limit in GiB * replica_hours   (0 when the deployment sets none)
    cost          = cpu_hours * price_cpu_hour + gpu_hours * price_gpu_hour + gb_hours * price_gb_hour

and a deployment's cost per 1,000 predictions is ``cost * 1000 / requests``, ``requests`` being
the calls the gateway counted since this server started. Storage: each blob the workspace holds
now costs ``size in GiB * months held in the period * price_gb_month`` (a month is 30 days).

The ``*_cost``/``overlap_hours`` functions are pure; :func:`serving_usage` and
:func:`storage_usage` read the store, the gateway's counts and the blob sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from aicloud.entities.usage import DIGITS, GIB, Prices
from aicloud.errors import NotFoundError
from aicloud.schemas.usage import ServingRow, ServingUsage, StorageUsage
from aicloud.server.state import AppState

__all__ = [
    "MONTH_SECONDS",
    "cost_per_1k",
    "overlap_seconds",
    "replica_cost",
    "serving_rows",
    "serving_usage",
    "storage_cost",
    "storage_usage",
]

MONTH_SECONDS = 30 * 86400


def overlap_seconds(
    start: datetime, end: datetime | None, since: datetime | None, until: datetime | None, now: datetime
) -> float:
    """Seconds of ``[start, end or now)`` inside ``[since, until)`` (open bounds: unlimited)."""
    low = max(start, since) if since is not None else start
    high = end if end is not None else now
    if until is not None:
        high = min(high, until)
    return max((high - low).total_seconds(), 0.0)


def replica_cost(
    cpus: int, gpus: int, memory_mb: int | None, hours: float, prices: Prices
) -> dict[str, float]:
    """The priced breakdown of one replica that ran ``hours``."""
    gib = (memory_mb or 0) * 2**20 / GIB
    cpu_hours, gpu_hours, gb_hours = cpus * hours, gpus * hours, gib * hours
    cost = cpu_hours * prices.cpu_hour + gpu_hours * prices.gpu_hour + gb_hours * prices.gb_hour
    return {"cpu_hours": cpu_hours, "gpu_hours": gpu_hours, "gb_hours": gb_hours, "cost": cost}


def cost_per_1k(cost: float, requests: int) -> float | None:
    """Cost of 1,000 predictions; None when nothing was served."""
    return round(cost * 1000 / requests, DIGITS) if requests > 0 else None


def storage_cost(size_bytes: int, seconds: float, price_gb_month: float) -> tuple[float, float]:
    """``(gb_months, cost)`` of holding ``size_bytes`` for ``seconds``."""
    gb_months = size_bytes / GIB * seconds / MONTH_SECONDS
    return gb_months, gb_months * price_gb_month


def _row(deployment_id: str, name: str, acc: Mapping[str, float], replicas: int, requests: int) -> ServingRow:
    cost = round(acc.get("cost", 0.0), DIGITS)
    return ServingRow(
        deployment_id=deployment_id,
        deployment=name,
        replicas=replicas,
        replica_hours=round(acc.get("replica_hours", 0.0), DIGITS),
        cpu_hours=round(acc.get("cpu_hours", 0.0), DIGITS),
        gpu_hours=round(acc.get("gpu_hours", 0.0), DIGITS),
        gb_hours=round(acc.get("gb_hours", 0.0), DIGITS),
        requests=requests,
        cost=cost,
        cost_per_1k=cost_per_1k(cost, requests),
    )


def serving_rows(
    replicas: Iterable[Mapping[str, Any]],
    requests: Mapping[str, int],
    prices: Prices,
    *,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> ServingUsage:
    """Pure: ``replicas`` (the store's ``replica_usage`` records) grouped by deployment, with the
    gateway's request counts by deployment id, and their total."""
    sums: dict[str, dict[str, float]] = {}
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for r in replicas:
        hours = overlap_seconds(r["started_at"], r["ended_at"], since, until, now) / 3600
        priced = replica_cost(int(r["cpus"]), int(r["gpus"]), r["memory_mb"], hours, prices)
        key = str(r["deployment_id"])
        names.setdefault(key, str(r["deployment"]))
        counts[key] = counts.get(key, 0) + 1
        acc = sums.setdefault(key, {})
        for name, value in [("replica_hours", hours), *priced.items()]:
            acc[name] = acc.get(name, 0.0) + value
    rows = [_row(key, names[key], acc, counts[key], int(requests.get(key, 0))) for key, acc in sums.items()]
    rows.sort(key=lambda row: (-row.cost, row.deployment, row.deployment_id))
    total: dict[str, float] = {}
    for acc in sums.values():
        for name, value in acc.items():
            total[name] = total.get(name, 0.0) + value
    all_requests = sum(int(requests.get(key, 0)) for key in sums)
    return ServingUsage(rows=rows, total=_row("total", "total", total, sum(counts.values()), all_requests))


def _requests(state: AppState, deployment_id: str) -> int:
    """The gateway's calls to the deployment since the server started (edge nodes' reports too)."""
    ep = state.endpoints.by_deployment(deployment_id)
    if ep is None:
        return 0
    local = sum(v.requests for v in list(ep.stats.versions.values()))
    edge = sum(int(v[0]) for v in list(ep.stats.edge.values()))
    return local + edge


def serving_usage(
    state: AppState, workspace_id: str, since: datetime | None, until: datetime | None, now: datetime
) -> ServingUsage:
    replicas = state.store.deployments.replica_usage(workspace_id, since, until)
    requests = {str(r["deployment_id"]): 0 for r in replicas}
    for key in requests:
        requests[key] = _requests(state, key)
    return serving_rows(replicas, requests, Prices.of(state.settings), since=since, until=until, now=now)


def storage_usage(
    state: AppState, workspace_id: str, since: datetime | None, until: datetime | None, now: datetime
) -> StorageUsage:
    price = state.settings.price_gb_month
    blobs = total_bytes = 0
    gb_months = cost = 0.0
    for digest, held_from in state.store.blob_refs.held(workspace_id):
        try:
            size = state.blobs.size(digest)
        except (NotFoundError, OSError):
            continue  # a reference to a blob being written or already gone
        blobs += 1
        total_bytes += size
        months, price_of = storage_cost(size, overlap_seconds(held_from, None, since, until, now), price)
        gb_months += months
        cost += price_of
    return StorageUsage(
        blobs=blobs,
        bytes=total_bytes,
        gb_months=gb_months,  # not rounded: a small blob held for minutes is far below 1e-9
        price_gb_month=price,
        cost=cost,
    )
