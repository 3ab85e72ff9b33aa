"""``aicloud demo``: the product loop on scikit-learn's bundled data, step by step."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from aicloud.cli.common import console, table
from aicloud.cli.datasets import render_version
from aicloud.cli.jobs import render_lineage
from aicloud.client import Client, DatasetVersion, Job
from aicloud.client.extras import require_extra
from aicloud.client.models import RegisteredModel


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


#: Demo training set-ups: (model name, task, dataset, params). Each trains in well under a minute on 2 cores.
DEMO_MODELS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("digits", "image-classification", "digits", {"epochs": 15, "batch_size": 64, "lr": 0.002, "seed": 0}),
    (
        "breast-cancer",
        "tabular-classification",
        "breast-cancer",
        {"epochs": 60, "batch_size": 32, "lr": 0.001, "hidden": [64, 32], "seed": 0},
    ),
]


def demo(
    columns: int = typer.Option(8, help="columns of each schema to print"),
    train: bool = typer.Option(True, help="also train, register and alias the models"),
    serve: bool = typer.Option(True, help="also deploy digits and call its endpoint"),
    finetune: bool = typer.Option(
        True, help="also fine-tune zoo/minilm into an intent classifier, deploy it and ask it questions"
    ),
) -> None:
    """Upload digits and breast-cancer data, split them, train a CNN and an MLP, register both,
    alias them `production`, and print the lineage of one version; deploy digits and call it; pull
    zoo/minilm, fine-tune it on the bundled intent set, deploy it and ask it customer questions."""
    # the sample data comes from scikit-learn; a thin SDK install (no extra) lacks it
    require_extra("server", "aicloud demo", packages=("scikit-learn", "pandas", "numpy"))
    client = Client()
    console.rule("[bold]aicloud demo: datasets")
    splits: dict[str, tuple[DatasetVersion, DatasetVersion]] = {}
    with tempfile.TemporaryDirectory(prefix="aicloud-demo-") as tmp:
        files = write_sample_csvs(Path(tmp))
        for name, path in files.items():
            ds = client.datasets.create(name, path, progress=True)
            render_version(ds, max_columns=columns)
            train_v, test_v = ds.split(train_size=0.8, seed=0, stratify="label")
            splits[name] = (train_v, test_v)
            console.print(
                f"split {ds.ref} → {train_v.ref} ({train_v.num_rows} rows) + "
                f"{test_v.ref} ({test_v.num_rows} rows), "
                "stratified on label, seed 0"
            )
            console.print()
    if not train:
        console.rule("[bold green]demo finished")
        return
    console.rule("[bold]aicloud demo: training and the registry")
    results = []
    for model_name, task, dataset, params in DEMO_MODELS:
        train_v, test_v = splits[dataset]
        started = time.monotonic()
        job = client.jobs.train(
            task=task,
            dataset=train_v,
            eval_dataset=test_v,
            target="label",
            params=params,
            model_name=model_name,
        )
        version = wait_and_promote(client, job, model_name)
        results.append(
            [
                model_name,
                task,
                f"v{version.version}",
                f"{version.metrics.get('eval_accuracy', 0):.4f}",
                f"{time.monotonic() - started:.1f} s",
            ]
        )
    console.print(
        table("test metrics (held-out 20%)", ["model", "task", "version", "accuracy", "wall time"], results)
    )
    console.print()
    render_lineage(client.models.lineage("digits@production"))
    if serve:
        serve_digits(client, splits["digits"][1])
    if serve and finetune:
        from aicloud.cli.demo_finetune import finetune_intents

        finetune_intents(client)
    console.rule("[bold green]demo finished")


def wait_and_promote(client: Client, job: Job, model_name: str) -> RegisteredModel:
    """Wait for a job with a progress bar; a failure prints its message or log tail and exits 1.
    The version it registered becomes ``model_name@production``."""
    job.wait(progress=True)
    if job.status != "succeeded":
        console.print(f"[red]job {job.id} {job.status}:[/]")
        console.print(job.info.message or job.logs()[-3000:], markup=False, highlight=False)
        raise typer.Exit(1)
    version = job.model_version
    assert version is not None
    client.models.set_alias(model_name, "production", version.version)
    return version


def serve_digits(client: Client, test: DatasetVersion) -> None:
    """Deploy digits@production and send every held-out row through the endpoint, one request each."""
    import httpx
    import numpy as np
    import pandas as pd

    console.rule("[bold]aicloud demo: serving")
    names = {d.name for d in client.deployments.list()}
    if "digits" in names:
        dep = client.deployments.get("digits").update(model="digits@production")
    else:
        dep = client.deployments.create("digits", model="digits@production", min_replicas=0, max_replicas=2)
    started = time.monotonic()
    with console.status("starting the digits endpoint …"):
        dep.wait_ready(timeout=180)
    console.print(f"endpoint {dep.url} ready in {time.monotonic() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="aicloud-demo-") as tmp:
        frame = pd.read_csv(client.datasets.download(test.name, Path(tmp) / "test.csv", version=test.version))
    labels = frame.pop("label").to_numpy()
    rows = frame.to_numpy().tolist()
    latencies, predictions = [], []
    token = client._transport.token or ""
    with httpx.Client(base_url=client.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for row in rows:
            t0 = time.perf_counter()
            r = http.post(f"/v1/endpoints/{dep.name}/predict", json={"inputs": [row]})
            latencies.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            predictions.append(r.json()["outputs"][0])
    accuracy = float((np.asarray(predictions) == labels).mean())
    p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
    console.print(
        table(
            f"digits endpoint: {len(rows)} held-out rows, one request each",
            ["accuracy", "p50 latency", "p99 latency"],
            [[f"{accuracy:.4f}", f"{p50:.2f} ms", f"{p99:.2f} ms"]],
        )
    )
