"""``aicloud monitoring drift REFERENCE CURRENT``: per-column drift between two dataset versions."""

from __future__ import annotations

import typer
from rich.table import Table

from aicloud.cli.common import Output, OutputOpt, client, console, emit
from aicloud.client.monitoring import DriftReport

monitoring_app = typer.Typer(help="Monitoring: data drift (docs/monitoring.md).", no_args_is_help=True)


def render_drift(report: DriftReport) -> None:
    ref, cur = report.reference, report.current
    table = Table(title=f"drift of {cur.name}:{cur.version} against {ref.name}:{ref.version}")
    for name in ("column", "test", "statistic", "threshold", "drifted"):
        table.add_column(name, justify="right" if name in ("statistic", "threshold") else "left")
    for c in report.columns:
        table.add_row(
            c.column,
            c.test,
            f"{c.statistic:.4g}",
            f"{c.threshold:g}",
            "[red]yes[/red]" if c.drifted else "no",
        )
    console.print(table)
    for label, names in (
        ("only in the reference", report.only_in_reference),
        ("only in the current", report.only_in_current),
    ):
        if names:
            console.print(f"{label}: {', '.join(names)}")
    for s in report.skipped:
        console.print(f"skipped {s.get('column')}: {s.get('reason')}")
    verdict = "[red]drifted[/red]" if report.drifted else "not drifted"
    console.print(
        f"drift score {report.drift_score:.3f} ({report.drifted_columns} of {report.tested_columns} columns; "
        f"threshold {report.threshold:g}): {verdict}; rows {report.reference_rows} -> {report.current_rows}"
    )


@monitoring_app.command("drift")
def drift(
    reference: str = typer.Argument(..., help="the reference dataset: NAME or NAME:VERSION"),
    current: str = typer.Argument(..., help="the dataset compared with it: NAME or NAME:VERSION"),
    column: list[str] | None = typer.Option(
        None, "--column", "-c", help="test only this column (repeat for more; default: all)"
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="the share of drifted columns at which the report says drifted"
    ),
    output: Output = OutputOpt,
) -> None:
    """Per-column drift of CURRENT against REFERENCE: Kolmogorov-Smirnov or chi-square tests below
    1,000 values, Wasserstein or Jensen-Shannon distances above, and the drift score (the share of
    drifted columns). See docs/monitoring.md."""
    report = client().monitoring.drift(
        reference=reference, current=current, columns=column or None, threshold=threshold
    )
    emit(report, output, render_drift)
