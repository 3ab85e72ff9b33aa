"""``aicloud model evaluate | predict``: evaluation and batch prediction jobs (docs/evaluation.md); the
commands are added to ``aicloud model`` in ``cli/main.py``."""

from __future__ import annotations

from typing import Any

import typer

from aicloud.cli.common import Output, OutputOpt, client, console, emit, table
from aicloud.client.evaluation import metrics_table

REF_HELP = "NAME, NAME:VERSION or NAME@ALIAS (zoo/NAME for predict)"
DATASET_HELP = "a dataset version: NAME (latest) or NAME:VERSION"


def model_evaluate(
    ref: str = typer.Argument(..., help=REF_HELP),
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    target: str | None = typer.Option(None, "--target", help="the label column (default: the model's)"),
    text: str | None = typer.Option(None, "--text", help="a text classifier's text column (text)"),
    chunk_rows: int | None = typer.Option(None, "--chunk-rows", min=1, help="rows per chunk (10,000)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="a bar of rows scored"),
    output: Output = OutputOpt,
) -> None:
    """Score a model version on a dataset version in a job; the metrics (accuracy, f1_macro, roc_auc or
    rmse, mae, r2) are recorded on the version as eval:<dataset>:<version>:<metric>."""
    metrics: dict[str, Any] = client().models.evaluate(
        ref,
        dataset,
        target=target,
        text=text,
        chunk_rows=chunk_rows,
        progress=progress and output is Output.table,
    )
    emit(
        metrics,
        output,
        lambda m: console.print(table(f"{ref} on {dataset}", ["metric", "value"], metrics_table(m))),
    )


def model_predict(
    ref: str = typer.Argument(..., help=REF_HELP),
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    out: str | None = typer.Option(None, "--output-dataset", "--to", help="default: <dataset>-predictions"),
    text: str | None = typer.Option(None, "--text", help="a text classifier's text column (text)"),
    chunk_rows: int | None = typer.Option(None, "--chunk-rows", min=1, help="rows per chunk (10,000)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="a bar of rows predicted"),
    output: Output = OutputOpt,
) -> None:
    """Predict every row of a dataset version in a job, in chunks; the input columns plus `prediction`
    (and `proba_<label>` for a classifier) become a new dataset version with lineage."""
    version = client().models.batch_predict(
        ref,
        dataset,
        output=out,
        text=text,
        chunk_rows=chunk_rows,
        progress=progress and output is Output.table,
    )
    payload = {"name": version.name, "version": version.version, "num_rows": version.num_rows,
               "lineage": version.lineage}  # fmt: skip
    emit(
        payload,
        output,
        lambda p: console.print(f"[green]wrote[/] {p['name']}:{p['version']} ({p['num_rows']} rows)"),
    )
