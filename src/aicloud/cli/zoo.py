"""``aicloud zoo list|show|pull``: the model zoo's pretrained entries (docs/zoo.md)."""

from __future__ import annotations

import threading
import time

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from aicloud.cli.common import Output, OutputOpt, client, console, emit, print_json, table, to_jsonable
from aicloud.schemas.zoo import ZooEntryOut, ZooPullOut

zoo_app = typer.Typer(
    help="The model zoo: pretrained models every workspace uses as zoo/<entry> (docs/zoo.md).",
    no_args_is_help=True,
)


def fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return str(n)


def _status(e: ZooEntryOut) -> str:
    if e.pulled and e.model_version is not None:
        return f"pulled (v{e.model_version.version})"
    return "not pulled" if e.installed else f"needs pip install {' '.join(e.install)}"


def render_list(entries: list[ZooEntryOut]) -> None:
    rows = [
        [e.ref, e.task, fmt_size(e.size_bytes), e.licence.split(" ")[0], _status(e), e.title] for e in entries
    ]
    console.print(table("model zoo", ["ref", "task", "size", "licence", "status", "what"], rows))


def render_entry(e: ZooEntryOut) -> None:
    console.print(f"[bold]{e.ref}[/bold]: {e.title} ({e.task}, entry revision {e.version})")
    for label, value in (
        ("what", e.summary),
        ("for", e.use),
        ("source", e.source),
        ("licence", e.licence),
        ("size", fmt_size(e.size_bytes)),
        ("status", _status(e)),
    ):
        console.print(f"  {label:8} {value}", markup=False)
    for key, value in e.signature.items():
        console.print(f"  {key:8} {value}", markup=False)
    for key, value in e.metrics.items():
        console.print(f"  {key:8} {value}", markup=False)
    if e.notes:
        console.print(f"  {'notes':8} {e.notes}", markup=False)
    if e.model_version is not None:
        files = ", ".join(sorted(e.model_version.files))
        console.print(f"  {'files':8} {files}")


@zoo_app.command("list")
def zoo_list(output: Output = OutputOpt) -> None:
    """The zoo's entries: task, size, licence, and whether this server has pulled each."""
    emit(client().zoo.list(), output, render_list)


@zoo_app.command("show")
def zoo_show(
    name: str = typer.Argument(..., help="an entry: minilm, digits-cnn..."), output: Output = OutputOpt
) -> None:
    """One entry: what it is for, source, licence, size, signature, measured metrics."""
    emit(client().zoo.show(name), output, render_entry)


@zoo_app.command("pull")
def zoo_pull(
    name: str = typer.Argument(..., help="the entry to register"), output: Output = OutputOpt
) -> None:
    """Register an entry as a read-only model every workspace uses as zoo/NAME (an admin token of the
    default workspace). MiniLM is converted to ONNX on the server, in the sandboxed compression worker:
    a minute or more. Pulled already: nothing is done."""
    sdk = client()
    result: dict[str, ZooPullOut | BaseException] = {}

    def call() -> None:
        try:
            result["out"] = sdk.zoo.pull(name)
        except BaseException as exc:  # shown by the CLI's error handler below, in this thread
            result["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(f"pulling zoo/{name} (the server builds and registers it)", total=None)
        worker.start()
        while worker.is_alive():
            time.sleep(0.1)
    error = result.get("error")
    if isinstance(error, BaseException):
        raise error
    out = result["out"]
    assert isinstance(out, ZooPullOut)
    if output is Output.json:
        print_json(to_jsonable(out))
        return
    e = out.entry
    number = e.model_version.version if e.model_version else "?"
    if out.created:
        console.print(f"pulled {e.ref} in {out.seconds:.1f}s: version {number}, {fmt_size(e.size_bytes)}")
        if out.check:
            console.print(f"  check: {out.check}")
    else:
        console.print(f"{e.ref} is pulled already (version {number})")
    console.print(f"use it from any workspace as model: {e.ref}")
