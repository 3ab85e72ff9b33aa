"""``aicloud usage``: CPU-, GPU- and GB-hours and cost, by job, user or day; serving and storage."""

from __future__ import annotations

import typer
from rich.table import Table

from aicloud.cli.common import Output, OutputOpt, client, console, emit
from aicloud.client.usage import UsageBy, UsageReport
from aicloud.schemas.usage import UsageRow


def fmt_hours(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.4f}" if value >= 0.0001 else f"{value:.2e}"


def fmt_wall(seconds: float) -> str:
    """``42.1s``, ``3m 05s``, ``2h 04m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_cost(value: float, currency: str) -> str:
    if value == 0:
        return f"0 {currency}"
    text = f"{value:.2f}" if value >= 0.01 else f"{value:.6f}".rstrip("0")
    return f"{text} {currency}"


def _leading(report: UsageReport, row: UsageRow | None) -> list[str]:
    """The grouping columns of a row (None: the total row)."""
    if report.by is UsageBy.JOB:
        if row is None:
            return ["total", "", "", "", ""]
        return [row.key, row.label, row.kind or "", row.status or "", row.user or ""]
    if row is None:
        return ["total"] if report.by is UsageBy.DAY else ["total", ""]
    return [row.key] if report.by is UsageBy.DAY else [row.label, row.key]


def _numbers(row: UsageRow) -> list[str]:
    return [
        str(row.jobs),
        fmt_hours(row.cpu_hours),
        fmt_hours(row.gpu_hours),
        fmt_hours(row.gb_hours),
        fmt_wall(row.wall_seconds),
        fmt_cost(row.cost, row.currency),
    ]


def render_usage(report: UsageReport) -> None:
    lead: dict[UsageBy, list[str]] = {
        UsageBy.JOB: ["job", "name", "kind", "status", "user"],
        UsageBy.USER: ["user", "token"],
        UsageBy.DAY: ["day (UTC)"],
    }
    span = ""
    if report.since or report.until:
        since = report.since.isoformat(timespec="seconds") if report.since else "the beginning"
        until = report.until.isoformat(timespec="seconds") if report.until else "now"
        span = f" from {since} to {until}"
    table = Table(title=f"usage by {report.by.value}{span}", show_footer=False)
    for name in lead[report.by]:
        table.add_column(name)
    for name in ("jobs", "cpu-hours", "gpu-hours", "GB-hours", "wall", "cost"):
        table.add_column(name, justify="right")
    for row in report.rows:
        table.add_row(*_leading(report, row), *_numbers(row))
    table.add_section()
    table.add_row(*_leading(report, None), *_numbers(report.total), style="bold")
    console.print(table)
    if not report.rows:
        console.print("no jobs ended in this period")
    _render_serving_storage(report)


def _render_serving_storage(report: UsageReport) -> None:
    """Serving by deployment, storage, and the cost of all (a server before 0012 sends none)."""
    if report.serving is not None:
        table = Table(title="serving (replicas, by deployment)")
        table.add_column("deployment")
        for name in ("replicas", "replica-hours", "cpu-hours", "gpu-hours", "GB-hours", "requests"):
            table.add_column(name, justify="right")
        table.add_column("cost", justify="right")
        table.add_column("cost / 1k predictions", justify="right")
        rows = [*report.serving.rows, report.serving.total]
        for i, row in enumerate(rows):
            if i == len(rows) - 1:
                table.add_section()
            per_1k = "-" if row.cost_per_1k is None else fmt_cost(row.cost_per_1k, report.currency)
            table.add_row(
                row.deployment,
                str(row.replicas),
                fmt_hours(row.replica_hours),
                fmt_hours(row.cpu_hours),
                fmt_hours(row.gpu_hours),
                fmt_hours(row.gb_hours),
                str(row.requests),
                fmt_cost(row.cost, report.currency),
                per_1k,
                style="bold" if i == len(rows) - 1 else None,
            )
        console.print(table)
    if report.storage is not None:
        s = report.storage
        console.print(
            f"storage: {s.blobs} blobs, {s.bytes} bytes, {fmt_hours(s.gb_months)} GB-months "
            f"at {fmt_cost(s.price_gb_month, report.currency)}/GB-month: {fmt_cost(s.cost, report.currency)}"
        )
    if report.total_cost is not None:
        console.print(
            f"total cost (jobs + serving + storage): {fmt_cost(report.total_cost, report.currency)}"
        )


def usage(
    by: UsageBy = typer.Option(UsageBy.JOB, "--by", help="group by job, user (token) or day (UTC)"),
    since: str | None = typer.Option(
        None, "--since", help="jobs that ended at or after this date (YYYY-MM-DD) or ISO datetime"
    ),
    until: str | None = typer.Option(
        None, "--until", help="jobs that ended before this datetime; a date includes that day"
    ),
    output: Output = OutputOpt,
) -> None:
    """CPU-, GPU- and GB-hours, wall time and cost of the jobs that ended, with a total row;
    then serving (replica-hours, requests, cost and cost per 1,000 predictions by deployment),
    storage (GB-months of blobs held) and the total cost of all three.

    Cost = prices (AICLOUD_PRICE_*) * reserved resources * wall time; see docs/usage.md.
    """
    report = client().usage(by=by.value, since=since, until=until)
    emit(report, output, render_usage)
