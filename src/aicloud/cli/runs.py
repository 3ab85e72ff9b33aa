"""``aicloud run ...``: list runs, show one with its metric curves, compare several side by side."""

from __future__ import annotations

import enum
import math
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from aicloud.cli.common import (
    Output,
    OutputOpt,
    client,
    console,
    emit,
    fmt_num,
    print_json,
    table,
    to_jsonable,
)
from aicloud.cli.runview import (
    BEST,
    best_of,
    blocks,
    differing_params,
    metric_stats,
    param_text,
    runs_per_block,
    sparkline,
)
from aicloud.entities import RunStatus
from aicloud.errors import NotFoundError
from aicloud.schemas.jobs import RunOut

run_app = typer.Typer(
    help="Tracked runs: list them, show one's params and metric curves, compare several.",
    no_args_is_help=True,
)

RUN_ID_HELP = "a run id (`aicloud run list` or `aicloud job show` prints them)"
CURVE_WIDTH = 20
COLUMN_WIDTH = 14
LABEL_WIDTH = 24


class Order(enum.StrEnum):
    best = "best"
    asc = "asc"
    desc = "desc"


def _when(run: RunOut) -> str:
    return run.created_at.strftime("%Y-%m-%d %H:%M")


def _nan_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _get(run_id: str) -> RunOut:
    """The run, or a not-found error that says where run ids are listed."""
    try:
        return client().runs.get(run_id)
    except NotFoundError as exc:
        raise NotFoundError(f"{exc.message}; `aicloud run list` shows the workspace's runs") from None


def _jsonable(run: RunOut) -> dict[str, Any]:
    """A run as JSON, a metric whose last value was not finite as null (JSON has no NaN)."""
    out: dict[str, Any] = to_jsonable(run)
    out["summary"] = {k: _nan_none(v) for k, v in run.summary.items()}
    return out


@run_app.command("list")
def run_list(
    job: str | None = typer.Option(None, help="only the runs of this job (a job id or a job name)"),
    model: str | None = typer.Option(
        None, help="only the runs that train this model (or registered a version of it)"
    ),
    status: RunStatus | None = typer.Option(None, help="only runs in this state"),
    metric: str | None = typer.Option(
        None, help="show this metric's last value and sort by it, best first (runs without it last)"
    ),
    order: Order = typer.Option(
        Order.best, help="with --metric: best first (highest for accuracy-like names, else lowest), asc, desc"
    ),
    name: str | None = typer.Option(None, "--name", help="only runs whose name contains this"),
    experiment: str | None = typer.Option(
        None, help="only the runs of this experiment (MLflow's, docs/mlflow.md)"
    ),
    where: str | None = typer.Option(
        None,
        "--filter",
        help="comparisons joined by 'and': \"metrics.val_loss < 0.5 and params.optimizer = adam\"",
    ),
    limit: int = typer.Option(20, min=1, max=1000, help="at most this many runs"),
    offset: int = typer.Option(0, min=0, help="skip this many runs (the next page: --offset N+limit)"),
    output: Output = OutputOpt,
) -> None:
    """The workspace's runs, newest first (or by --metric); the server filters and pages."""
    page = client().runs.page(
        job=job,
        model=model,
        status=status.value if status else None,
        metric=metric,
        order=order.value,
        limit=limit,
        offset=offset,
        name=name,
        filter=where,
        experiment=experiment,
    )
    runs = page.runs

    def render(_: Any) -> None:
        t = Table(title="runs")
        # 100 columns: the whole id, the rest cut with an ellipsis when they do not fit.
        t.add_column("id", no_wrap=True, min_width=max((len(r.id) for r in runs), default=2))
        t.add_column("name", no_wrap=True, overflow="ellipsis", max_width=20)
        t.add_column("status", no_wrap=True, overflow="ellipsis")
        t.add_column("created", no_wrap=True, min_width=16)
        if metric:
            t.add_column(metric, no_wrap=True, overflow="ellipsis", max_width=COLUMN_WIDTH)
        for r in runs:
            t.add_row(  # names are data, never markup: a '[/]' in one is printed as it is
                r.id,
                escape(r.name),
                r.status.value,
                _when(r),
                *([fmt_num(r.summary.get(metric))] if metric else []),
            )
        console.print(t)
        if offset + len(runs) < page.total:
            console.print(f"[dim]{len(runs)} of {page.total}; the next page: --offset {offset + limit}[/]")

    emit([_jsonable(r) for r in runs], output, render)


@run_app.command("show")
def run_show(run_id: str = typer.Argument(..., help=RUN_ID_HELP), output: Output = OutputOpt) -> None:
    """One run: its params, and each metric's last, min and max values, steps and curve.

    The curve is a sparkline of the metric over its steps, lowest ▁ to highest █.
    """
    run = _get(run_id)
    series = client().runs.metrics(run.id)
    stats = [metric_stats(name, s["steps"], s["values"]) for name, s in series.items()]
    if output is Output.json:
        print_json({**_jsonable(run), "metrics": {s.name: s for s in stats}})
        return
    console.print(f"[bold]{escape(run.name)}[/] {run.id}  [bold]{run.status.value}[/]")
    finished = f"  finished {run.finished_at:%Y-%m-%d %H:%M}" if run.finished_at else ""
    experiment = f"  experiment {escape(run.experiment)}" if run.experiment else ""
    console.print(f"  job {run.job_id or '-'}{experiment}  created {_when(run)}{finished}")
    console.print(table("params", ["param", "value"], [[k, param_text(v)] for k, v in run.params.items()]))
    if run.tags:  # MLflow's run tags (docs/mlflow.md)
        console.print(table("tags", ["tag", "value"], [[k, v] for k, v in sorted(run.tags.items())]))
    metrics = Table(title="metrics", caption="curve: the metric over its steps, lowest ▁ to highest █")
    for name in ("metric", "last", "min", "max", "steps"):
        metrics.add_column(name, no_wrap=True, overflow="ellipsis", max_width=LABEL_WIDTH)
    metrics.add_column("curve", no_wrap=True, min_width=CURVE_WIDTH)
    for s in stats:
        curve = sparkline(series[s.name]["values"], CURVE_WIDTH)
        metrics.add_row(escape(s.name), fmt_num(s.last), fmt_num(s.min), fmt_num(s.max), str(s.steps), curve)
    console.print(metrics)


def _compare_records(runs: list[RunOut]) -> list[dict[str, Any]]:
    """One record per run, as ``-o json`` prints them: id, name, status, ``param.*``, and the
    last value of each metric (system metrics left out)."""
    return [
        {
            "run_id": r.id,
            "name": r.name,
            "status": r.status.value,
            **{f"param.{k}": v for k, v in r.params.items()},
            **{k: _nan_none(v) for k, v in r.summary.items() if not k.startswith("system/")},
        }
        for r in runs
    ]


def _compare_table(runs: list[RunOut], params: list[str]) -> Table:
    """One block of ``run compare``: a label column, then one column per run."""
    t = Table()
    # Long names and values fold onto more lines: nothing of a run is cut.
    t.add_column("", overflow="fold", max_width=LABEL_WIDTH, style="bold")
    for r in runs:
        short = r.id[:12]
        t.add_column(f"{escape(r.name)}\n{short}", overflow="fold", max_width=COLUMN_WIDTH)
    t.add_row("status", *(r.status.value for r in runs))
    t.add_section()
    for name in params:
        t.add_row(
            escape(name), *(escape(param_text(r.params[name])) if name in r.params else "-" for r in runs)
        )
    if not params:
        t.add_row("[dim](params)[/]", *("[dim]same[/]" for _ in runs))
    t.add_section()
    return t


@run_app.command("compare")
def run_compare(
    run_ids: list[str] = typer.Argument(..., help="two or more run ids (`aicloud run list` shows them)"),
    all_params: bool = typer.Option(
        False, "--all-params", help="show every param, not only those that differ between the runs"
    ),
    output: Output = OutputOpt,
) -> None:
    """Runs side by side, one column each: differing params, then metrics (best marked ★).

    Rows: the params that differ between the runs (--all-params: all), then each metric's last value.

    Runs that do not fit the terminal's width go on in a next table.
    """
    runs = [_get(run_id) for run_id in run_ids]
    if output is Output.json:
        print_json(_compare_records(runs))
        return
    every = sorted({k for r in runs for k in r.params})
    params = every if all_params else differing_params([r.params for r in runs])
    metrics = sorted({k for r in runs for k in r.summary if not k.startswith("system/")})
    values = {m: [_nan_none(r.summary.get(m)) for r in runs] for m in metrics}
    best = {m: best_of(m, values[m]) for m in metrics}
    size = runs_per_block(console.width, LABEL_WIDTH, COLUMN_WIDTH, len(runs))
    parts = blocks(len(runs), size)
    for part in parts:
        shown = [runs[i] for i in part]
        t = _compare_table(shown, params)
        for m in metrics:
            cells = [fmt_num(values[m][i]) + (f" {BEST}" if i in best[m] else "") for i in part]
            t.add_row(escape(m), *cells)
        console.print(t)
    console.print(f"{BEST} best: highest for accuracy-like metrics, lowest for losses, errors and times")
    if not all_params and len(params) < len(every):
        console.print(f"[dim]{len(every) - len(params)} params are the same in every run: --all-params[/]")
