"""Your own training code, run as a job (examples/train-job.yaml): a logistic regression in torch.

Inside a job, ``aicloud.training`` logs to the job's run and registers the model; run it on your
machine (``python examples/train.py --data examples/digits.csv``) and the same calls print the
metrics and save the model under ./aicloud-model/ instead.
"""

from __future__ import annotations

import argparse
import os

import pandas as pd
import torch

from aicloud.training import log_metric, log_params, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    # in a job, the bootstrap downloads the spec's `datasets` and names them AICLOUD_DATASET_<ROLE>
    parser.add_argument("--data", default=os.environ.get("AICLOUD_DATASET_TRAIN", "digits.csv"))
    args = parser.parse_args()

    frame = pd.read_csv(args.data)
    y = torch.tensor(frame.pop("label").to_numpy(), dtype=torch.long)
    x = torch.tensor(frame.to_numpy(), dtype=torch.float32) / 16.0  # pixels are 0..16
    log_params({"epochs": args.epochs, "lr": args.lr, "rows": len(frame)})

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
        log_metric("train_loss", loss.item(), step=epoch)
        log_metric("train_accuracy", accuracy, step=epoch)
    print(f"trained {args.epochs} epochs: train_accuracy={accuracy:.3f}", flush=True)
    # an ONNX export of the module, registered as model `my-digits-script` with its metrics
    save_model(model, example_input=x[:1], name="my-digits-script", metrics={"train_accuracy": accuracy})


if __name__ == "__main__":
    main()
