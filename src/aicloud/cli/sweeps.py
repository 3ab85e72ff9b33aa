"""``aicloud sweep ...``: hyperparameter sweeps (see docs/sweeps.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from aicloud.cli.common import (
    Output,
    OutputOpt,
    UsageError,
    client,
    console,
    emit,
    fmt_num,
    int_field,
    read_spec_file,
    table,
)
from aicloud.client.sweeps import Sweep, submit_sweep_spec
from aicloud.schemas.sweeps import SweepTrialsOut

sweep_app = typer.Typer(
    help="Hyperparameter sweeps: trials of a built-in task (the best model registered) or of your own code.",
    no_args_is_help=True,
)


def _value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list | dict) else fmt_num(v)


def render_trials(sweep: Sweep, trials: SweepTrialsOut) -> None:
    info = sweep.info
    console.print(
        f"[bold]{info.name}[/] {info.id}  sweep  [bold]{info.status.value}[/]"
        + (f" ({info.reason})" if info.reason else "")
        + f"  {trials.direction} {trials.metric}, {len(trials.trials)}/{trials.max_trials} trials,"
        f" {trials.epochs} epochs"
    )
    names = sorted({n for t in trials.trials for n in t.params})
    rows = []
    for t in trials.trials:
        state = t.state + (f" @{t.pruned_at}" if t.state == "pruned" and t.pruned_at else "")
        best = trials.best is not None and t.number == trials.best.number
        rows.append(
            [
                f"{t.number}{' *' if best else ''}",
                t.job_id,
                state,
                fmt_num(t.value),
                t.epochs,
                *(_value(t.params.get(n)) for n in names),
                t.note or "",
            ]
        )
    console.print(table("trials", ["#", "job", "state", trials.metric, "epochs", *names, "note"], rows))
    if trials.best is not None:
        console.print(
            f"best: trial {trials.best.number} {trials.metric}={fmt_num(trials.best.value)}  "
            + "  ".join(f"{k}={_value(v)}" for k, v in trials.best.params.items())
        )
    if info.model_version_id:
        from aicloud.cli.jobs import model_version_label

        console.print(f"  model {model_version_label(info.model_version_id)}")
    if info.message and info.status.value == "failed":
        console.print(info.message, style="red", markup=False, highlight=False)


def _load(file: Path) -> tuple[dict[str, Any], str | None, int]:
    doc = read_spec_file(file, "the sweep spec")
    if doc.get("kind", "sweep") != "sweep":
        raise UsageError(f"{file}: kind is {doc['kind']!r}; a sweep file has kind: sweep (or no kind)")
    if isinstance(doc.get("spec"), dict):
        spec = dict(doc["spec"])
    else:
        spec = {k: v for k, v in doc.items() if k not in ("kind", "name", "priority")}
    name = doc.get("name")
    return spec, None if name is None else str(name), int_field(doc, "priority", 0, file)


@sweep_app.command("create")
def sweep_create(
    file: Path = typer.Option(
        ..., "-f", "--file", exists=True, dir_okay=False, help="sweep spec (YAML or JSON)"
    ),
    wait: bool = typer.Option(True, help="wait for the sweep and show its progress"),
    output: Output = OutputOpt,
) -> None:
    """Submit a sweep from a file: ``name``, and ``spec`` with train (or command), space, metric,
    max_trials... A command's ``code`` may be a folder or file (relative to the sweep file): it is
    uploaded as ``aicloud job run`` uploads a command job's code."""
    spec, name, priority = _load(file)
    command = spec.get("command")
    if isinstance(command, dict) and isinstance(command.get("code"), str):
        code = command["code"]
        if not (file.parent / code).exists() and not re.fullmatch(r"[0-9a-f]{64}", code):
            raise UsageError(f"{file}: command.code {code!r} does not exist (a folder or file of your code)")
    try:
        sweep = submit_sweep_spec(client(), spec, name=name, priority=priority, base=file.parent)
    except ValueError as exc:  # a runtime_env requirements_file that cannot be read
        raise UsageError(f"{file}: {exc}") from None
    if not wait:
        emit(sweep.info, output, lambda _: console.print(f"sweep {sweep.id} submitted ({sweep.name})"))
        return
    sweep.wait(progress=output is Output.table)
    trials = sweep.trials()
    emit(trials, output, lambda t: render_trials(sweep, t))
    if sweep.status != "succeeded":
        raise typer.Exit(1)


def _sweep_id(ref: str) -> str:
    from aicloud.cli.jobs import find_job

    return find_job(ref).id


@sweep_app.command("show")
def sweep_show(
    job: str = typer.Argument(..., help="the sweep's job id or name (its newest)"), output: Output = OutputOpt
) -> None:
    """The trials table of a sweep (params, state incl. pruned, objective, epochs) and the best params."""
    sweep = client().jobs.get_sweep(_sweep_id(job))
    trials = sweep.trials()
    emit(trials, output, lambda t: render_trials(sweep, t))


@sweep_app.command("cancel")
def sweep_cancel(job: str = typer.Argument(..., help="the sweep's job id or name (its newest)")) -> None:
    """Stop a sweep and every trial still pending or running."""
    sweep = client().jobs.get_sweep(_sweep_id(job)).cancel()
    console.print(f"cancel requested for sweep {sweep.id} ({sweep.info.status.value})")
