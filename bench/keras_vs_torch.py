"""Keras 3 (torch backend) against plain PyTorch on the seeds' two models (docs/keras.md).

    python bench/keras_vs_torch.py [--epochs 100] [--threads 2] [--repeats 1]

The models are the seeds' (examples/keras/): seed 002's regression MLP (Dense 64 relu, 128 relu, 1;
mse, Adam) on scikit-learn's diabetes set (442 rows, 10 features standardized), seed 003's CNN
(Conv2D 32 3x3 relu, MaxPooling 2x2, Dense 64 relu, Dense 10 softmax; sparse categorical
crossentropy, Adam) on the 8x8 digits (1,797 images). The PyTorch versions have the same layers,
Glorot-uniform weights and zero biases (Keras' defaults), Adam with Keras' defaults (lr 1e-3,
eps 1e-7), the same batch size (32), epochs, shuffling each epoch, and the same split: 20% test
(``train_test_split``, seed 42), then the last 20% (MLP) or 10% (CNN) of the training rows for
validation, as ``validation_split`` takes them. Both run in this process on ``--threads`` torch
threads; seconds are ``fit`` alone (validation included), not the imports or the evaluation.

Prints the table and writes bench/results/keras_vs_torch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras' import, as in an aicloud job

RESULTS = Path(__file__).parent / "results"
SEED = 0


def data() -> dict[str, tuple[Any, ...]]:
    import numpy as np
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(
        X.astype("float32"), y.astype("float32"), test_size=0.2, random_state=42
    )
    scaler = StandardScaler().fit(Xtr)
    regression = (scaler.transform(Xtr).astype("float32"), ytr, scaler.transform(Xte).astype("float32"), yte)
    digits = load_digits()
    images = (digits.data / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    Xtr, Xte, ytr, yte = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.2, random_state=42
    )
    return {"mlp": (*regression, 0.2), "cnn": (Xtr, ytr, Xte, yte, 0.1)}


# --- Keras


def keras_model(kind: str, features: int) -> Any:
    from keras import layers
    from keras.models import Sequential

    if kind == "mlp":
        model = Sequential(
            [
                layers.Dense(64, activation="relu", input_shape=(features,)),
                layers.Dense(128, activation="relu"),
                layers.Dense(1),
            ]
        )
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    else:
        model = Sequential(
            [
                layers.Conv2D(32, (3, 3), activation="relu", input_shape=(8, 8, 1)),
                layers.MaxPooling2D((2, 2)),
                layers.Flatten(),
                layers.Dense(64, activation="relu"),
                layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_keras(kind: str, split: tuple[Any, ...], epochs: int) -> dict[str, Any]:
    import keras

    Xtr, ytr, Xte, yte, validation = split
    keras.utils.set_random_seed(SEED)
    model = keras_model(kind, Xtr.shape[1])
    start = time.perf_counter()
    model.fit(Xtr, ytr, epochs=epochs, batch_size=32, validation_split=validation, verbose=0)
    seconds = time.perf_counter() - start
    loss, metric = model.evaluate(Xte, yte, verbose=0)
    return {"seconds": seconds, "test_loss": float(loss), "test_metric": float(metric)}


# --- PyTorch


def torch_model(kind: str, features: int) -> Any:
    from torch import nn

    if kind == "mlp":
        model = nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 1)
        )
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 3 * 3, 64),
            nn.ReLU(),
            nn.Linear(64, 10),  # softmax inside the loss (cross entropy of the logits)
        )
    for layer in model:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


def run_torch(kind: str, split: tuple[Any, ...], epochs: int) -> dict[str, Any]:
    import torch
    from torch import nn

    Xtr, ytr, Xte, yte, validation = split
    torch.manual_seed(SEED)
    cut = int(len(Xtr) * (1 - validation))  # validation_split: the last rows, before shuffling

    def tensors(X: Any, y: Any) -> tuple[Any, Any]:
        x = torch.from_numpy(X)
        if kind == "cnn":
            x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        return x, torch.from_numpy(y if kind == "cnn" else y.reshape(-1, 1))

    xt, yt = tensors(Xtr[:cut], ytr[:cut])
    xv, yv = tensors(Xtr[cut:], ytr[cut:])
    xe, ye = tensors(Xte, yte)
    model = torch_model(kind, Xtr.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn: Any = nn.MSELoss() if kind == "mlp" else nn.CrossEntropyLoss()

    def metric(out: Any, y: Any) -> float:
        if kind == "mlp":
            return float((out - y).abs().mean())
        return float((out.argmax(1) == y).float().mean())

    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 32):
            idx = order[i : i + 32]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():  # validation each epoch, as Keras' fit does
            out = model(xv)
            float(loss_fn(out, yv)), metric(out, yv)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        out = model(xe)
        return {"seconds": seconds, "test_loss": float(loss_fn(out, ye)), "test_metric": metric(out, ye)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs of each fit (the seeds': 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (Keras' torch backend too)")
    parser.add_argument("--repeats", type=int, default=1, help="fits of each; the table shows the median")
    args = parser.parse_args()

    import keras
    import torch

    torch.set_num_threads(args.threads)
    splits = data()
    load_before = os.getloadavg()[0]  # other work on the machine slows both alike, not equally
    rows = []
    for kind, metric_name in (("mlp", "mae"), ("cnn", "accuracy")):
        for framework, run in (("keras", run_keras), ("torch", run_torch)):
            results = [run(kind, splits[kind], args.epochs) for _ in range(args.repeats)]
            rows.append(
                {
                    "model": kind,
                    "framework": framework,
                    "metric": f"test_{metric_name}",
                    "test_metric": statistics.median(r["test_metric"] for r in results),
                    "test_loss": statistics.median(r["test_loss"] for r in results),
                    "seconds": statistics.median(r["seconds"] for r in results),
                    "runs": results,
                }
            )
    print(f"{'model':6} {'framework':14} {'test metric':>22} {'test loss':>10} {'fit s':>7} {'ms/epoch':>9}")
    for row in rows:
        label = "keras (torch)" if row["framework"] == "keras" else "pytorch"
        shown = f"{row['metric']} {row['test_metric']:.4f}"
        ms = 1000 * row["seconds"] / args.epochs
        print(
            f"{row['model']:6} {label:14} {shown:>22} {row['test_loss']:10.4f} "
            f"{row['seconds']:7.2f} {ms:9.1f}"
        )
    out = {
        "epochs": args.epochs,
        "threads": args.threads,
        "repeats": args.repeats,
        "keras": keras.__version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "keras_vs_torch.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'keras_vs_torch.json'}")


if __name__ == "__main__":
    main()
