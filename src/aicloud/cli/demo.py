"""``aicloud demo``: the product loop on scikit-learn's bundled data, step by step."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from aicloud.cli.common import console
from aicloud.cli.datasets import render_version
from aicloud.client import Client


def write_sample_csvs(folder: Path) -> dict[str, Path]:
    """digits (64 pixel columns + ``label``) and breast cancer (30 features + ``label``) as CSV files."""
    from sklearn.datasets import load_breast_cancer, load_digits

    out: dict[str, Path] = {}
    for name, loader in (("digits", load_digits), ("breast-cancer", load_breast_cancer)):
        bunch = loader(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "label"})
        frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        out[name] = path
    return out


def demo(columns: int = typer.Option(8, help="columns of each schema to print")) -> None:
    """Upload digits and breast-cancer data, split each 80/20 stratified, print schema and stats."""
    client = Client()
    console.rule("[bold]aicloud demo: datasets")
    with tempfile.TemporaryDirectory(prefix="aicloud-demo-") as tmp:
        files = write_sample_csvs(Path(tmp))
        for name, path in files.items():
            ds = client.datasets.create(name, path, progress=True)
            render_version(ds, max_columns=columns)
            train, test = ds.split(train_size=0.8, seed=0, stratify="label")
            console.print(
                f"split {ds.ref} → {train.ref} ({train.num_rows} rows) + {test.ref} ({test.num_rows} rows), "
                "stratified on label, seed 0"
            )
            console.print()
    console.rule("[bold green]demo finished")
