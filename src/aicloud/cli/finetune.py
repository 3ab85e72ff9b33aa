"""``aicloud job finetune``: fine-tune a pretrained model version on a dataset (docs/finetuning.md)."""

from __future__ import annotations

from typing import Any

import typer

from aicloud.cli.common import Output, OutputOpt, client, emit


def job_finetune(
    base: str = typer.Option(..., help="the pretrained model: zoo/minilm, zoo/digits-cnn, name:3"),
    dataset: str = typer.Option(..., help="training data: name or name:version"),
    eval_dataset: str = typer.Option(..., help="evaluation data: name or name:version"),
    task: str = typer.Option("text-classification", help="text-classification or image-classification"),
    method: str = typer.Option("head", help="head (seconds), full or lora (text-classification)"),
    text: str = typer.Option("text", help="the text column"),
    target: str = typer.Option("label", help="the label column"),
    epochs: int | None = typer.Option(None, help="epochs (default: by method)"),
    lr: float | None = typer.Option(None, help="learning rate (default: by method)"),
    freeze: bool = typer.Option(False, help="image-classification: train only the new head"),
    model_name: str | None = typer.Option(None, help="registry name of the result (default: the job name)"),
    name: str | None = typer.Option(None, help="job name"),
    cpus: int = typer.Option(1, help="CPU cores (torch threads)"),
    wait: bool = typer.Option(True, help="wait for the job and show its progress"),
    output: Output = OutputOpt,
) -> None:
    """Fine-tune a pretrained model (a zoo entry or your own version) on a labelled dataset and
    register the result, with lineage to its base. A job file with ``kind: finetune`` and these
    fields under ``spec`` does the same (``aicloud job run -f``)."""
    from aicloud.cli.jobs import render_job

    more: dict[str, Any] = {"cpus": cpus}
    if freeze:
        more["freeze"] = True
    j = client().jobs.finetune(
        base, dataset, eval_dataset, task=task, text=text, target=target, method=method, epochs=epochs,
        lr=lr, name=name, model_name=model_name, **more,
    )  # fmt: skip
    if wait and output is Output.table:
        j.wait(progress=True)
    emit(j.info, output, lambda _: render_job(j))
    if wait and j.status == "failed":
        raise typer.Exit(1)
