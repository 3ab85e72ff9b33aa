"""Rebuild the zoo's shipped files (docs/zoo.md): ``digits-cnn``, aicloud's own pretrained digits CNN.

    .venv/bin/python tools/build_zoo.py [--out src/aicloud/zoo/data/digits_cnn]

Trains the built-in CNN (aicloud.artifacts.architectures.CNN, 8x8 images, channels 16/32, head 64) on
scikit-learn's bundled digits (no download): a stratified 80/20 split with seed 0, 1,437 rows to train
and 360 held out, full-batch-free Adam for 40 epochs, one thread, seeds fixed, so a rerun writes the
same weights. Prints the held-out accuracy and writes it to the model's config (``metrics``); the
catalog entry (src/aicloud/zoo/entries/digits-cnn.json) quotes it.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from aicloud.artifacts.architectures import CNN
from aicloud.artifacts.format import save_builtin
from aicloud.artifacts.preprocess import Preprocessor, signature

OUT = Path(__file__).resolve().parents[1] / "src" / "aicloud" / "zoo" / "data" / "digits_cnn"
EPOCHS = 40
BATCH = 64
LR = 2e-3
SEED = 0


def build(out: Path) -> dict[str, float]:
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    frame = load_digits(as_frame=True).frame
    target = "target"
    features = [c for c in frame.columns if c != target]
    frame[target] = frame[target].astype("int64")
    train, held = train_test_split(frame, test_size=0.2, random_state=SEED, stratify=frame[target])
    pre = Preprocessor.fit(train, features, image_shape=[8, 8])
    x_train = torch.from_numpy(pre.transform(train))
    y_train = torch.from_numpy(train[target].to_numpy().copy())
    x_held = torch.from_numpy(pre.transform(held))
    y_held = held[target].to_numpy()
    model = CNN([8, 8], 10, hidden=[64], dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        predicted = model(x_held).argmax(1).numpy()
    accuracy = float(np.mean(predicted == y_held))
    labels = list(range(10))
    config = {
        "task": "image-classification",
        "preprocessing": pre.to_config(),
        "signature": signature(pd.DataFrame(train), features, target, "int64"),
        "target": target,
        "output": "logits",
        "labels": labels,
        "metrics": {"accuracy": round(accuracy, 4)},
        "training": {
            "data": "sklearn.datasets.load_digits (1,797 8x8 images), stratified 80/20 split, seed 0",
            "train_rows": len(train),
            "held_out_rows": len(held),
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "lr": LR,
            "built_by": "tools/build_zoo.py",
        },
    }
    save_builtin(out, model, config)
    return {"accuracy": accuracy, "held_out_rows": float(len(held))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = build(args.out)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(json.dumps({**result, "folder": str(args.out), "bytes": size}))


if __name__ == "__main__":
    main()
