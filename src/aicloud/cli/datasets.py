"""``aicloud dataset ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aicloud.cli.common import (
    LimitOpt,
    OffsetOpt,
    Output,
    OutputOpt,
    client,
    console,
    emit,
    fmt_num,
    page_hint,
    split_ref,
    table,
)
from aicloud.client import DatasetVersion

app = typer.Typer(help="Upload, inspect, split and download datasets.", no_args_is_help=True)


def render_version(v: DatasetVersion, max_columns: int = 20) -> None:
    """A version's header line, schema and per-column stats."""
    console.print(
        f"[bold]{v.name}[/] v{v.version}  {v.format}  {v.num_rows} rows  {v.size_bytes} bytes  "
        f"sha256 {v.sha256[:16]}…"
    )
    if v.lineage.get("source") == "split":
        p = v.lineage["parent"]
        console.print(f"  from {p['name']} v{p['version']} ({v.lineage['part']}, {v.lineage['params']})")
    rows: list[list[Any]] = []
    for col in v.schema[:max_columns]:
        s = v.stats.get(col["name"], {})
        rows.append(
            [
                col["name"],
                col["dtype"],
                fmt_num(s.get("min")),
                fmt_num(s.get("max")),
                fmt_num(s.get("mean")),
                fmt_num(s.get("nulls")),
                fmt_num(s.get("distinct")),
            ]
        )
    console.print(table(None, ["column", "dtype", "min", "max", "mean", "nulls", "distinct"], rows))
    if len(v.schema) > max_columns:
        console.print(f"  … and {len(v.schema) - max_columns} more columns (--output json shows all)")


@app.command("upload")
@app.command("create", hidden=True)
def upload(
    name: str = typer.Argument(..., help="dataset name; an existing name gets a new version"),
    files: list[Path] = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        readable=True,
        help="the file (CSV, Parquet, NPZ or JSON Lines); several: each one to NAME-<stem>",
    ),
    format: str | None = typer.Option(None, help="csv, parquet, npz or jsonl (default: from the file name)"),
    output: Output = OutputOpt,
) -> None:
    """Upload FILE as the next version of dataset NAME, with a progress bar. Several files (e.g.
    train.csv test.csv) become the next versions of NAME-train and NAME-test, one per file's stem."""
    progress = output is Output.table
    if len(files) == 1:
        version = client().datasets.create(name, files[0], format=format, progress=progress)
        emit(version, output, render_version)
        return
    parts = client().datasets.create(name, files=files, format=format, progress=progress)

    def render(_: Any) -> None:
        for version in parts.values():
            render_version(version)

    emit(parts, output, render)


@app.command("list")
def list_(offset: int = OffsetOpt, limit: int = LimitOpt, output: Output = OutputOpt) -> None:
    """The workspace's datasets, newest first, a page at a time (--offset, --limit)."""
    items = client().datasets.list(offset=offset, limit=limit)
    page_hint(len(items), offset, limit)
    emit(
        items,
        output,
        lambda xs: console.print(
            table(
                "datasets",
                ["name", "latest", "versions", "updated"],
                [
                    [d.name, d.latest_version, d.num_versions, d.updated_at.isoformat(timespec="seconds")]
                    for d in xs
                ],
            )
        ),
    )


@app.command("show")
def show(ref: str = typer.Argument(..., help="NAME or NAME:VERSION"), output: Output = OutputOpt) -> None:
    """Schema and stats of a version (the latest by default)."""
    name, version = split_ref(ref)
    emit(client().datasets.get(name, version), output, render_version)


@app.command("versions")
def versions(
    name: str = typer.Argument(..., help="the dataset"),
    offset: int = OffsetOpt,
    limit: int = LimitOpt,
    output: Output = OutputOpt,
) -> None:
    """A dataset's versions, oldest first, a page at a time (--offset, --limit)."""
    items = client().datasets.versions(name, offset=offset, limit=limit)
    page_hint(len(items), offset, limit)
    emit(
        items,
        output,
        lambda xs: console.print(
            table(
                name,
                ["version", "format", "rows", "bytes", "sha256", "source", "created"],
                [
                    [
                        v.version,
                        v.format,
                        v.num_rows,
                        v.size_bytes,
                        v.sha256[:12],
                        v.lineage.get("source"),
                        v.created_at.isoformat(timespec="seconds"),
                    ]
                    for v in xs
                ],
            )
        ),
    )


@app.command("split")
def split(
    ref: str = typer.Argument(..., help="NAME or NAME:VERSION"),
    train_size: float = typer.Option(0.8, help="fraction of rows for training, in (0, 1)"),
    seed: int = typer.Option(0, help="same seed, same split"),
    stratify: str | None = typer.Option(None, help="column whose class proportions both parts keep"),
    output: Output = OutputOpt,
) -> None:
    """Split a version into NAME-train and NAME-test versions."""
    name, version = split_ref(ref)
    train, test = client().datasets.split(name, version, train_size=train_size, seed=seed, stratify=stratify)

    def render(_: Any) -> None:
        for v in (train, test):
            render_version(v, max_columns=5)

    emit({"train": train, "test": test}, output, render)


@app.command("download")
def download(
    ref: str = typer.Argument(..., help="NAME or NAME:VERSION"),
    path: Path = typer.Argument(Path("."), help="file or folder to write"),
) -> None:
    """Download a version, byte-identical to what was uploaded (sha256 checked)."""
    name, version = split_ref(ref)
    target = client().datasets.download(name, path, version=version, progress=True)
    console.print(f"wrote {target}")


@app.command("delete")
def delete(
    name: str = typer.Argument(..., help="the dataset"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask"),
) -> None:
    """Delete a dataset and all its versions."""
    if not yes:
        typer.confirm(f"delete dataset {name!r} and all its versions?", abort=True)
    client().datasets.delete(name)
    console.print(f"deleted {name}")
