"""Fine-tuning benchmark (docs/finetuning.md): the intent set on MiniLM by ``head``, ``lora`` and ``full``,
and image transfer learning of the digits CNN against training from scratch on the same examples.

    python bench/finetune.py [--methods head,lora,full] [--threads 2] [--no-image] [--no-text]

Text: the base is zoo/minilm's folder as the zoo builds it (aicloud.zoo.minilm.build: ONNX embeddings,
tokenizer.json, the torch weights; built once into a cache folder); the data is the intent set shipped
with aicloud (aicloud/data/samples/intents.csv: 240 train / 80 test utterances, 10 intents). Each
method runs in this process with ``--threads`` torch/ONNX Runtime threads; seconds are the whole
fine-tune (tokenizing, training, the ONNX export and its check), not the process start or the base.

Images: a CNN of the zoo's digits-cnn architecture pretrained here on digits 0-4 (every such image of
scikit-learn's digits) is the base; the new task is digits 5-9 from 20 images per class (100 rows),
evaluated on every other 5-9 image. Rows: fine-tuned (every layer), fine-tuned with the convolutions
frozen, and the same architecture trained from scratch on the same 100 rows; also the zoo's
digits-cnn (pretrained on all ten digits, so it has seen 5-9: an upper bound, not a transfer).

Prints a table and writes bench/results/finetune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
CACHE = Path(os.environ.get("AICLOUD_BENCH_CACHE", Path.home() / ".cache" / "aicloud" / "bench"))
EPOCHS = {"head": 100, "lora": 6, "full": 4}
LR = {"head": 0.05, "lora": 1e-3, "full": 5e-5}


def minilm_base() -> Path:
    folder = CACHE / "minilm"
    if not (folder / "config.json").exists():
        from aicloud.zoo.minilm import build

        build(folder, {"name": "minilm", "version": 1})
    return folder


def intents() -> tuple[Any, Any]:
    import pandas as pd

    path = resources.files("aicloud") / "data" / "samples" / "intents.csv"
    frame = pd.read_csv(str(path))
    return frame[frame.split == "train"], frame[frame.split == "test"]


def bench_text(methods: list[str], threads: int) -> list[dict[str, Any]]:
    from aicloud.training.finetune import text_data
    from aicloud.training.finetune_text import finetune_text

    base = minilm_base()
    config = json.loads((base / "config.json").read_text())
    train, test = intents()
    data = text_data(train, test, "text", "label")
    rows = []
    for method in methods:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            metrics = finetune_text(
                base, config, data, Path(tmp) / "out", method=method, epochs=EPOCHS[method], lr=LR[method],
                threads=threads, log=lambda line: None,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
        rows.append({"task": "intents (MiniLM)", "method": method, "epochs": EPOCHS[method],
                     "accuracy": metrics["eval_accuracy"], "macro_f1": metrics["eval_macro_f1"],
                     "seconds": seconds, "train_rows": len(data.y_train),
                     "eval_rows": len(data.y_eval)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def digits_frames() -> tuple[Any, Any, Any]:
    """(digits 0-4: every image; 5-9: 20 per class; 5-9: the rest), columns as the zoo's CNN names them."""
    import numpy as np
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    low = frame[frame.label < 5]
    high = frame[frame.label >= 5]
    rng = np.random.default_rng(0)
    picked = np.concatenate(
        [rng.choice(high.index[high.label == d], 20, replace=False) for d in range(5, 10)]
    )
    return low, high.loc[picked], high.drop(index=picked)


def bench_images(threads: int, epochs: int = 40) -> list[dict[str, Any]]:
    import torch

    from aicloud.artifacts.format import save_builtin
    from aicloud.training.finetune_image import finetune_cnn, load_cnn, replace_head, train_cnn_from_scratch

    torch.set_num_threads(threads)
    zoo = Path(str(resources.files("aicloud") / "zoo" / "data" / "digits_cnn"))
    zoo_config = json.loads((zoo / "config.json").read_text())
    low, few, rest = digits_frames()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # the base: the zoo's architecture and preprocessing, pretrained here on digits 0-4
        base = Path(tmp) / "base04"
        t0 = time.perf_counter()
        cnn = load_cnn(zoo, zoo_config)
        replace_head(cnn, 5)
        with torch.no_grad():  # fresh weights everywhere: 0-4 only
            for m in cnn.modules():
                if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                    m.reset_parameters()
        save_builtin(base, cnn, {k: v for k, v in zoo_config.items() if k not in ("architecture", "format")})
        config = json.loads((base / "config.json").read_text())
        finetune_cnn(base, config, low, low.iloc[:200], base, epochs=15, lr=0.003, batch_size=64,
                     log=lambda line: None)  # fmt: skip
        config = json.loads((base / "config.json").read_text())
        print(f"base pretrained on {len(low)} images of 0-4 in {time.perf_counter() - t0:.1f}s", flush=True)
        runs: list[tuple[str, str, Any]] = [
            ("fine-tune (all layers)", "CNN pretrained on 0-4", lambda out: finetune_cnn(
                base, config, few, rest, out, epochs=epochs, log=lambda line: None)),
            ("fine-tune (convolutions frozen)", "CNN pretrained on 0-4", lambda out: finetune_cnn(
                base, config, few, rest, out, epochs=epochs, freeze=True, log=lambda line: None)),
            ("from scratch", "none (random weights)", lambda out: train_cnn_from_scratch(
                config, few, rest, epochs=epochs)),
            ("fine-tune (all layers)", "zoo/digits-cnn (saw 0-9)", lambda out: finetune_cnn(
                zoo, zoo_config, few, rest, out, epochs=epochs, log=lambda line: None)),
        ]  # fmt: skip
        for method, base_name, run in runs:
            t0 = time.perf_counter()
            metrics = run(Path(tmp) / "out")
            rows.append({"task": "digits 5-9, 20/class", "method": method, "base": base_name,
                         "epochs": epochs, "accuracy": metrics["eval_accuracy"],
                         "macro_f1": metrics["eval_macro_f1"], "seconds": time.perf_counter() - t0,
                         "train_rows": len(few), "eval_rows": len(rest)})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="head,lora,full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-image", action="store_true")
    parser.add_argument("--no-text", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    if not args.no_text:
        rows += bench_text([m for m in args.methods.split(",") if m], args.threads)
    if not args.no_image:
        rows += bench_images(args.threads)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fine-tuning, {args.threads} thread(s)")
    for col in ("task", "method", "base", "accuracy", "macro-F1", "seconds"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["task"], r["method"], r.get("base", "zoo/minilm"), f"{r['accuracy']:.4f}",
                      f"{r['macro_f1']:.4f}", f"{r['seconds']:.1f}")  # fmt: skip
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    out = {"threads": args.threads, "cpus": os.cpu_count(), "machine": platform.machine(),
           "load_average": os.getloadavg(), "rows": rows}  # fmt: skip
    (RESULTS / "finetune.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'finetune.json'}")


if __name__ == "__main__":
    main()
