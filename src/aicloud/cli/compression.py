"""``aicloud model export | quantize | prune | compare``: model compression (docs/compression.md); the
commands are added to ``aicloud model`` in ``cli/main.py``.

The work runs on the server, in a sandboxed worker; the CLI shows a status spinner while it waits.
"""

from __future__ import annotations

from typing import Any

import typer

from aicloud.cli.common import Output, OutputOpt, client, console, emit, table
from aicloud.schemas.compression import CompareOut
from aicloud.schemas.jobs import ModelVersionOut

REF_HELP = "NAME, NAME:VERSION or NAME@ALIAS"


def _made(v: ModelVersionOut) -> None:
    derived = v.lineage.get("derived") or {}
    detail = ""
    if derived.get("max_abs_diff") is not None:
        detail = (
            f" (largest output difference {derived['max_abs_diff']:.2g}, tolerance {derived['tolerance']:g})"
        )
    elif v.metrics.get("parent_top1_agreement") is not None:
        detail = f" (top-1 agreement with the parent {v.metrics['parent_top1_agreement']:.1%} on examples)"
    console.print(
        f"[green]made[/] {v.name}:{v.version} ({derived.get('method')}) from {derived.get('from')}{detail}"
    )


def model_export(
    ref: str = typer.Argument(..., help=REF_HELP),
    format: str = typer.Option("onnx", "--format", help="the format to export to (onnx)"),
    output: Output = OutputOpt,
) -> None:
    """Export a version to ONNX as the model's next version, checked against it (max abs diff ≤ 1e-4)."""
    with console.status(f"exporting {ref} to {format} on the server…"):
        v = client().models.export(ref, format=format)
    emit(v, output, lambda _: _made(v))


def model_quantize(
    ref: str = typer.Argument(..., help=REF_HELP),
    method: str = typer.Option("dynamic-int8", "--method", help="dynamic-int8 or static-int8"),
    calibration: str | None = typer.Option(
        None,
        "--calibration",
        help="static-int8: a dataset version (NAME or NAME:VERSION) with the model's inputs",
    ),
    output: Output = OutputOpt,
) -> None:
    """Quantize a version to int8 with ONNX Runtime as the model's next version."""
    with console.status(f"quantizing {ref} ({method}) on the server…"):
        v = client().models.quantize(ref, method=method, calibration=calibration)
    emit(v, output, lambda _: _made(v))


def model_prune(
    ref: str = typer.Argument(..., help=REF_HELP),
    amount: float = typer.Option(0.5, "--amount", help="the share of each hidden layer's units to remove"),
    finetune_epochs: int = typer.Option(3, "--finetune-epochs", help="epochs of fine-tuning afterwards"),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="fine-tuning data (NAME or NAME:VERSION); default: the version's training data",
    ),
    output: Output = OutputOpt,
) -> None:
    """Remove whole units and channels of a built-in model, fine-tune it: the model's next version."""
    with console.status(f"pruning {ref} ({amount:.0%} of each hidden layer) on the server…"):
        v = client().models.prune(ref, amount, finetune_epochs=finetune_epochs, dataset=dataset)

    def render(_: Any) -> None:
        _made(v)
        params, before = v.metrics.get("parameters"), v.metrics.get("parent_parameters")
        if params and before:
            console.print(
                f"  parameters: {before:,.0f} → {params:,.0f}; architecture {v.config['architecture']}"
            )

    emit(v, output, render)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _speed(base: float, value: float) -> str:
    if value <= 0 or base <= 0:
        return "-"
    ratio = base / value
    return f"{ratio:.2f}x" if ratio >= 1 else f"{ratio:.2f}x (slower)"


def compare_table(out: CompareOut) -> Any:
    """The variants as a Rich table; speed-ups are against the first variant, and say so when slower."""
    first = out.variants[0] if out.variants else None
    rows = []
    for v in out.variants:
        rows.append(
            [
                v.label,
                v.method or "original",
                v.runtime,
                _size(v.size_bytes),
                f"{v.p50_ms_b1:.3f}",
                _speed(first.p50_ms_b1, v.p50_ms_b1) if first else "-",
                f"{v.p50_ms_b32:.3f}",
                _speed(first.p50_ms_b32, v.p50_ms_b32) if first else "-",
                f"{v.accuracy:.4f}" if v.accuracy is not None else "-",
                f"{v.cosine_to_first:.5f}" if v.cosine_to_first is not None else "-",
            ]
        )
    title = f"{out.model}: variants" + (f" on {out.dataset}" if out.dataset else " (no evaluation dataset)")
    title += f", {out.threads} thread{'s' if out.threads > 1 else ''} per runtime"
    columns = ["variant", "method", "runtime", "size", "p50 b1 ms", "vs first", "p50 b32 ms", "vs first"]
    return table(title, [*columns, "accuracy", "cosine to first"], rows)


def model_compare(
    name: str = typer.Argument(..., help="the model"),
    dataset: str | None = typer.Option(
        None, "--dataset", help="an evaluation dataset version (NAME or NAME:VERSION)"
    ),
    versions: list[int] | None = typer.Option(
        None, "--version", "-v", help="a version to compare (repeat); default: all"
    ),
    threads: int = typer.Option(1, "--threads", help="threads for each runtime (1: as a replica of cpus 1)"),
    output: Output = OutputOpt,
) -> None:
    """Per version: size, p50 latency at batch 1 and 32 on the server, accuracy (or cosine to the first)."""
    with console.status(f"measuring the versions of {name} on the server…"):
        out = client().models.compare(name, dataset=dataset, versions=versions or None, threads=threads)
    emit(out, output, lambda _: console.print(compare_table(out)))
