"""Usage reports: the jobs that ended in a time range, grouped by job, user or day.

:func:`workspace_usage` is the ``GET /usage`` answer: it reads the jobs, their sweeps and the
token names from the store and hands them to :func:`summarize`, which is pure (jobs in, report
out), so it is unit-tested without a server. A job counts when it ran (it has measured
``usage``); one cancelled while pending, or that failed to launch, used nothing and is left out.
A sweep has no process of its own: its trials are summed into its row (``by=job``) and count for
its submitter (``by=user``). A job that ended before costs were recorded is priced at the
current prices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aicloud.entities import Job
from aicloud.entities.usage import DIGITS, Prices, with_cost
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.usage import UsageBy, UsageReport, UsageRow
from aicloud.server.services.usage_costs import serving_usage, storage_usage
from aicloud.server.state import AppState

__all__ = ["parse_bound", "priced", "summarize", "workspace_usage"]


def parse_bound(value: str | None, field: str, *, end: bool = False) -> datetime | None:
    """A ``since``/``until`` query value: an ISO date or datetime (UTC when it has no zone).

    A bare date means the start of that UTC day, or with ``end`` the start of the next one, so
    that ``since=2024-06-01&until=2024-06-30`` covers all of June.
    """
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(), tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError.field(
            field, f"{value[:60]!r} is not a date (YYYY-MM-DD) or an ISO 8601 datetime"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def priced(job: Job, prices: Prices) -> dict[str, Any] | None:
    """The job's usage with its cost, or None for a job that never ran a process (a sweep's
    ``usage`` is a summary of its trials: no wall time, no cost)."""
    if "cost" not in job.usage and "wall_seconds" not in job.usage:
        return None
    if "cost" in job.usage:
        return job.usage
    return with_cost(job.usage, job.spec, prices)


def _num(usage: Mapping[str, Any], key: str) -> float:
    value = usage.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


@dataclass
class _Sum:
    jobs: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_bytes: int = 0
    cpu_hours: float = 0.0
    gpu_hours: float = 0.0
    gb_hours: float = 0.0
    cost: float = 0.0
    currencies: set[str] = field(default_factory=set)
    last: datetime | None = None

    def add(self, usage: Mapping[str, Any], finished_at: datetime | None) -> None:
        self.jobs += 1
        self.cpu_seconds += _num(usage, "cpu_seconds")
        self.wall_seconds += _num(usage, "wall_seconds")
        self.peak_rss_bytes = max(self.peak_rss_bytes, int(_num(usage, "peak_rss_bytes")))
        self.cpu_hours += _num(usage, "cpu_hours")
        self.gpu_hours += _num(usage, "gpu_hours")
        self.gb_hours += _num(usage, "gb_hours")
        self.cost += _num(usage, "cost")
        self.currencies.add(str(usage.get("currency") or ""))
        if finished_at is not None and (self.last is None or finished_at > self.last):
            self.last = finished_at

    def row(self, key: str, label: str, currency: str, **extra: Any) -> UsageRow:
        known = self.currencies - {""}
        return UsageRow(
            key=key,
            label=label,
            jobs=self.jobs,
            cpu_seconds=round(self.cpu_seconds, 3),
            wall_seconds=round(self.wall_seconds, 3),
            peak_rss_bytes=self.peak_rss_bytes,
            cpu_hours=round(self.cpu_hours, DIGITS),
            gpu_hours=round(self.gpu_hours, DIGITS),
            gb_hours=round(self.gb_hours, DIGITS),
            cost=round(self.cost, DIGITS),
            currency=known.pop() if len(known) == 1 else ("mixed" if known else currency),
            **extra,
        )


def summarize(
    jobs: Iterable[Job],
    *,
    by: UsageBy,
    prices: Prices,
    parents: Mapping[str, Job] | None = None,
    user_names: Mapping[str, str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> UsageReport:
    """Group the ended ``jobs`` by ``by``; ``parents`` maps a trial's ``parent_id`` to its sweep
    (when the sweep is not among ``jobs``), ``user_names`` a token id to its name."""
    jobs = list(jobs)
    known = {j.id: j for j in jobs} | dict(parents or {})
    names = user_names or {}
    groups: dict[str, _Sum] = {}
    total = _Sum()

    def owner(job: Job) -> str | None:
        if job.created_by is None and job.parent_id and job.parent_id in known:
            return known[job.parent_id].created_by
        return job.created_by

    def user_label(token_id: str | None) -> str:
        if token_id is None:
            return "(unknown)"
        return names.get(token_id, f"{token_id} (deleted)")

    for job in jobs:
        usage = priced(job, prices)
        if usage is None:
            continue
        if by is UsageBy.JOB:
            key = job.parent_id if job.parent_id and job.parent_id in known else job.id
        elif by is UsageBy.USER:
            key = owner(job) or ""
        else:
            key = (job.finished_at or datetime.now(UTC)).astimezone(UTC).date().isoformat()
        groups.setdefault(key, _Sum()).add(usage, job.finished_at)
        total.add(usage, job.finished_at)

    rows: list[UsageRow] = []
    for key, acc in groups.items():
        if by is UsageBy.JOB:
            root = known[key]
            rows.append(
                acc.row(
                    key,
                    root.name,
                    prices.currency,
                    kind=root.kind.value,
                    status=root.status.value,
                    user=user_label(owner(root)),
                    finished_at=root.finished_at or acc.last,
                )
            )
        elif by is UsageBy.USER:
            rows.append(acc.row(key, user_label(key or None), prices.currency))
        else:
            rows.append(acc.row(key, key, prices.currency))
    if by is UsageBy.JOB:
        rows.sort(key=lambda r: (r.finished_at or datetime.max.replace(tzinfo=UTC), r.key))
    elif by is UsageBy.USER:
        rows.sort(key=lambda r: (-r.cost, r.label, r.key))
    else:
        rows.sort(key=lambda r: r.key)
    return UsageReport(
        by=by,
        since=since,
        until=until,
        currency=prices.currency,
        rows=rows,
        total=total.row("total", "total", prices.currency),
    )


def workspace_usage(
    state: AppState, workspace_id: str, by: UsageBy, since: str | None, until: str | None
) -> UsageReport:
    """The workspace's jobs that ended in ``[since, until)`` (query values, see :func:`parse_bound`),
    summarized ``by`` job, user or day at the configured prices, with its serving and storage
    costs in the same period (``server.services.usage_costs``)."""
    low = parse_bound(since, "since")
    high = parse_bound(until, "until", end=True)
    if low is not None and high is not None and low >= high:
        raise ValidationError.field("until", f"until ({until}) must be after since ({since})")
    jobs = state.store.jobs.finished_between(workspace_id, low, high)
    have = {j.id for j in jobs}
    parents: dict[str, Job] = {}
    for parent_id in {j.parent_id for j in jobs if j.parent_id and j.parent_id not in have}:
        with contextlib.suppress(NotFoundError):  # a sweep that is gone: its trials stand alone
            parents[parent_id] = state.store.jobs.get(workspace_id, parent_id)
    names = {t.id: t.name for t in state.store.tokens.list(workspace_id)}
    report = summarize(
        jobs,
        by=by,
        prices=Prices.of(state.settings),
        parents=parents,
        user_names=names,
        since=low,
        until=high,
    )
    now = datetime.now(UTC)
    report.serving = serving_usage(state, workspace_id, low, high, now)
    report.storage = storage_usage(state, workspace_id, low, high, now)
    report.total_cost = round(report.total.cost + report.serving.total.cost + report.storage.cost, DIGITS)
    return report
