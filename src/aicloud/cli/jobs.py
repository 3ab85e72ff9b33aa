"""``aicloud job ...`` and ``aicloud model ...`` (``aicloud run ...`` is ``cli/runs.py``, ``aicloud job
finetune`` is ``cli/finetune.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aicloud.cli.common import (
    LimitOpt,
    OffsetOpt,
    Output,
    OutputOpt,
    UsageError,
    client,
    console,
    emit,
    fmt_num,
    int_field,
    page_hint,
    read_spec_file,
    table,
)
from aicloud.client.jobs import Job
from aicloud.errors import AicloudError, NotFoundError
from aicloud.schemas.runtime_env import expand_runtime_env

job_app = typer.Typer(
    help="Training jobs and your own code, queued and run by the control plane.", no_args_is_help=True
)
model_app = typer.Typer(help="The model registry: versions, aliases, lineage.", no_args_is_help=True)


def _job_row(j: Job) -> list[Any]:
    info = j.info
    return [
        info.id,
        info.name,
        info.kind.value,
        info.status.value,
        info.reason or "",
        info.created_at.isoformat(timespec="seconds"),
    ]


def find_job(ref: str) -> Job:
    """A job by id (``job_…``) or by name: the newest job with that name."""
    c = client()
    if ref.startswith("job_"):
        return c.jobs.get(ref)
    named = [j for j in c.jobs.list(limit=1000) if j.info.name == ref]
    if not named:
        raise NotFoundError(
            f"no job named or with id {ref!r} among the newest 1000; `aicloud job list` shows them"
        )
    return max(named, key=lambda j: j.info.created_at)


JOB_REF_HELP = "a job id (job_…) or a job name (its newest job)"


def model_version_label(version_id: str) -> str:
    """``digits v2`` for a model version id (the id itself if it cannot be read)."""
    try:
        v = client().models.get_by_id(version_id)
    except AicloudError:
        return version_id
    return f"{v.name} v{v.version}"


def render_job(j: Job) -> None:
    info = j.info
    console.print(
        f"[bold]{info.name}[/] {info.id}  {info.kind.value}  [bold]{info.status.value}[/]"
        + (f" ({info.reason})" if info.reason else "")
    )
    if info.run_id:
        console.print(f"  run {info.run_id}")
    workers = int(info.spec.get("workers") or 1)
    if workers > 1 or info.spec.get("max_restarts"):
        console.print(
            f"  workers {workers}  restarts {info.attempt}/{int(info.spec.get('max_restarts') or 0)}"
        )
    if info.checkpoint:
        console.print(
            f"  checkpoint epoch {info.checkpoint.get('epoch')} ({info.checkpoint.get('digest', '')[:12]})"
        )
    if info.model_version_id:
        console.print(f"  model {model_version_label(info.model_version_id)}")
    if info.usage:
        shown = {k: v for k, v in info.usage.items() if k not in ("cost", "currency", "prices")}
        console.print("  usage " + "  ".join(f"{k}={fmt_num(v)}" for k, v in shown.items()))
    if "cost" in info.usage:
        console.print(f"  cost {fmt_num(info.usage['cost'])} {info.usage.get('currency', '')}")
    if info.message and info.status.value == "failed":
        console.print("[red]last log lines:[/]")
        console.print(info.message, markup=False, highlight=False)


@job_app.command("run")
def job_run(
    file: Path = typer.Option(
        ..., "-f", "--file", exists=True, dir_okay=False, help="job spec (YAML or JSON)"
    ),
    code: Path | None = typer.Option(None, help="file or folder to upload as the code of a command job"),
    wait: bool = typer.Option(True, help="wait for the job and show its progress"),
    requirements: Path | None = typer.Option(
        None,
        "--requirements",
        exists=True,
        dir_okay=False,
        help="requirements.txt installed into the job's runtime env before it starts (docs/runtime-envs.md)",
    ),
    output: Output = OutputOpt,
) -> None:
    """Submit a job from a spec file (see docs/training.md for the fields).

    The server checks the spec: a wrong or unknown field is one red line naming it (exit 1); a
    file that is missing, not YAML or not a job spec, exit 2."""
    doc = read_spec_file(file, "the job spec")
    kind = doc.get("kind")
    if kind not in ("train", "command", "sweep", "finetune"):
        raise UsageError(
            f"{file}: kind must be train, command, sweep or finetune, not {kind!r} (docs/training.md)"
        )
    if kind == "sweep":  # the same file `aicloud sweep create -f` takes
        from aicloud.cli.sweeps import sweep_create

        sweep_create(file=file, wait=wait, output=output)
        return
    unknown = sorted(set(doc) - {"kind", "name", "priority", "spec"})
    if unknown:
        raise UsageError(
            f"{file}: unknown key(s) {', '.join(map(repr, unknown))}; a job file has kind, name, "
            "priority and spec (its fields go under spec: docs/training.md)"
        )
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise UsageError(f"{file}: spec must be a mapping of fields, not {type(spec).__name__}")
    spec = dict(spec)
    code_path = code
    if kind == "command" and "code_path" in spec:  # relative to the spec file
        code_path = code_path or file.parent / str(spec.pop("code_path"))
        if not code_path.exists():
            raise UsageError(f"{file}: code_path {str(code_path)!r} does not exist")
    if spec.get("runtime_env") is not None or requirements is not None:
        try:  # requirements_file relative to the spec file; --requirements adds its lines
            spec["runtime_env"] = expand_runtime_env(
                spec.get("runtime_env"), requirements_file=requirements, base=file.parent
            )
        except ValueError as exc:
            raise UsageError(f"{file}: {exc}") from None
    name = doc.get("name")
    j = client().jobs.submit(
        kind,
        spec,
        name=None if name is None else str(name),
        priority=int_field(doc, "priority", 0, file),
        code=code_path,
    )
    if wait and output is Output.table:
        j.wait(progress=True)
    emit(j.info, output, lambda _: render_job(j))
    if wait and j.status == "failed":
        raise typer.Exit(1)


@job_app.command("list")
def job_list(
    status: str | None = typer.Option(None, help="pending, running, succeeded, failed, cancelled"),
    offset: int = OffsetOpt,
    limit: int = LimitOpt,
    output: Output = OutputOpt,
) -> None:
    """The workspace's jobs, newest first, a page at a time (--offset, --limit): id, name, kind, status."""
    jobs = client().jobs.list(status=status, offset=offset, limit=limit)
    page_hint(len(jobs), offset, limit)
    emit(
        [j.info for j in jobs],
        output,
        lambda _: console.print(
            table("jobs", ["id", "name", "kind", "status", "reason", "created"], [_job_row(j) for j in jobs])
        ),
    )


@job_app.command("show")
def job_show(job: str = typer.Argument(..., help=JOB_REF_HELP), output: Output = OutputOpt) -> None:
    """One job: status, run, workers, checkpoint, the model it registered, usage and cost."""
    j = find_job(job)
    emit(j.info, output, lambda _: render_job(j))


@job_app.command("logs")
def job_logs(
    job: str = typer.Argument(..., help=JOB_REF_HELP),
    follow: bool = typer.Option(False, "-f", "--follow", help="stream until the job ends"),
) -> None:
    """Print a job's log (stdout and stderr); -f follows it live."""
    for text in find_job(job).iter_logs(follow=follow):
        typer.echo(text, nl=False)


@job_app.command("cancel")
def job_cancel(job: str = typer.Argument(..., help=JOB_REF_HELP)) -> None:
    """Stop a job: SIGTERM to its process group, SIGKILL after the grace period."""
    j = find_job(job).cancel()
    console.print(f"cancel requested for {j.id} ({j.info.status.value})")


@job_app.command("wait")
def job_wait(
    job: str = typer.Argument(..., help=JOB_REF_HELP),
    timeout: float | None = typer.Option(None, help="seconds to wait at most (default: no limit)"),
) -> None:
    """Wait for a job with a progress bar; exits 1 unless it succeeded."""
    j = find_job(job).wait(timeout=timeout, progress=True)
    render_job(j)
    if j.status != "succeeded":
        raise typer.Exit(1)


@model_app.command("list")
def model_list(offset: int = OffsetOpt, limit: int = LimitOpt, output: Output = OutputOpt) -> None:
    """Registered models, newest first, a page at a time (--offset, --limit): latest version, aliases."""
    models = client().models.list(offset=offset, limit=limit)
    page_hint(len(models), offset, limit)
    emit(
        models,
        output,
        lambda xs: console.print(
            table(
                "models",
                ["name", "latest", "aliases"],
                [
                    [m.name, m.latest_version, ", ".join(f"{a}→v{v}" for a, v in m.aliases.items())]
                    for m in xs
                ],
            )
        ),
    )


@model_app.command("show")
def model_show(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS"), output: Output = OutputOpt
) -> None:
    """One model version: metrics, inputs, outputs, files."""
    v = client().models.get(ref)

    def render(_: Any) -> None:
        console.print(f"[bold]{v.name}[/] v{v.version}  aliases: {', '.join(v.aliases) or '-'}")
        console.print(table("metrics", ["metric", "value"], [[k, fmt_num(x)] for k, x in v.metrics.items()]))
        ins = v.signature.get("inputs", [])
        console.print(
            f"  inputs: {len(ins)} ({', '.join(i['name'] for i in ins[:5])}{', …' if len(ins) > 5 else ''})"
        )
        console.print(f"  outputs: {v.signature.get('outputs')}")
        console.print(f"  files: {', '.join(v.files)}")

    emit(v, output, render)


@model_app.command("alias")
def model_alias(
    name: str = typer.Argument(..., help="the model"),
    alias: str = typer.Argument(..., help="the alias, e.g. production"),
    version: int = typer.Argument(..., help="the version number (see `aicloud model list`)"),
) -> None:
    """Point ALIAS (e.g. production) at VERSION of model NAME."""
    v = client().models.set_alias(name, alias, version)
    console.print(f"{name}@{alias} → v{v.version}")


def render_lineage(lin: dict[str, Any]) -> None:
    console.print(f"[bold]{lin['model']}[/] v{lin['version']}  aliases: {', '.join(lin['aliases']) or '-'}")
    console.print("  metrics: " + "  ".join(f"{k}={fmt_num(v)}" for k, v in lin["metrics"].items()))
    derived = lin.get("derived")
    if derived:  # made from another version by compression (docs/compression.md)
        console.print(f"  ← {derived.get('method')} of {derived.get('from')}")
    if lin.get("run_id") or lin.get("job_id") or not derived:
        console.print(
            f"  ← run {lin.get('run_id')}  ← job {lin.get('job_id')} ({lin.get('job_kind')}, "
            f"{lin.get('task') or lin.get('job_name')})"
        )
    for d in lin.get("datasets", []):
        line = f"  ← {d['role']}: dataset {d['name']}:{d['version']} ({d.get('num_rows', '?')} rows"
        line += f", sha256 {d['sha256'][:12]}…)" if d.get("sha256") else ")"
        console.print(line)
        parent = d.get("parent")
        if parent:
            console.print(f"      ← split of {parent['name']}:{parent['version']}")
    if lin.get("code_digest"):
        console.print(f"  ← code {lin['code_digest'][:16]}…")


@model_app.command("lineage")
def model_lineage(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS"), output: Output = OutputOpt
) -> None:
    """What made a model version: run, job, datasets (and their parents), code."""
    emit(client().models.lineage(ref), output, render_lineage)


def _register_finetune() -> None:
    from aicloud.cli.finetune import job_finetune

    job_app.command("finetune")(job_finetune)


_register_finetune()
