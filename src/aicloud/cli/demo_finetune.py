"""``aicloud demo``'s fine-tuning step: pull zoo/minilm, fine-tune an intent classifier on the bundled
customer-service set (``head``: seconds), deploy it and ask its endpoint a few questions."""

from __future__ import annotations

import csv
import io
import tempfile
import time
from importlib import resources
from pathlib import Path

import httpx

from aicloud.cli.common import console, table
from aicloud.cli.demo import wait_and_promote
from aicloud.client import Client
from aicloud.errors import ValidationError

#: customer questions that are not in the intent set
QUESTIONS = (
    "hi, my parcel still has not arrived, where is it?",
    "I would like my money back for the broken lamp",
    "please call off the order I placed an hour ago",
    "I can't sign in, I forgot my password",
    "are you open on Sunday afternoon?",
    "can I talk to a real person please",
)
MODEL = "intents"


def intent_csvs(folder: Path) -> tuple[Path, Path]:
    """The bundled intent set (aicloud/data/samples/intents.csv) as train.csv and test.csv (text, label)."""
    source = resources.files("aicloud") / "data" / "samples" / "intents.csv"
    rows = list(csv.DictReader(io.StringIO(source.read_text(encoding="utf-8"))))
    paths = []
    for split in ("train", "test"):
        path = folder / f"intents-{split}.csv"
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label"])
            writer.writerows([r["text"], r["label"]] for r in rows if r["split"] == split)
        paths.append(path)
    return paths[0], paths[1]


def finetune_intents(client: Client) -> None:
    """Pull zoo/minilm, fine-tune ``intents`` (head), alias it production, deploy and query it."""
    console.rule("[bold]aicloud demo: fine-tuning a pretrained model")
    started = time.monotonic()
    try:
        with console.status("pulling zoo/minilm (converted to ONNX on the server the first time) …"):
            pulled = client.zoo.pull("minilm")
    except ValidationError as exc:  # the server lacks aicloud[zoo]: the message names what to install
        console.print(f"[yellow]skipping the fine-tuning step: {exc.message}[/]")
        return
    what = f"pulled in {pulled.seconds:.1f} s" if pulled.created else "already pulled"
    console.print(f"zoo/minilm: {what}")
    with tempfile.TemporaryDirectory(prefix="aicloud-demo-") as tmp:
        train_csv, test_csv = intent_csvs(Path(tmp))
        train = client.datasets.create("intents-train", train_csv)
        test = client.datasets.create("intents-test", test_csv)
    console.print(
        f"intent set: {train.ref} ({train.num_rows} rows) + {test.ref} ({test.num_rows} rows), 10 intents"
    )
    job = client.jobs.finetune(
        base="zoo/minilm", dataset=train, eval_dataset=test, text="text", target="label", method="head",
        model_name=MODEL,
    )  # fmt: skip
    version = wait_and_promote(client, job, MODEL)
    accuracy, f1 = version.metrics.get("eval_accuracy", 0.0), version.metrics.get("eval_macro_f1", 0.0)
    console.print(
        f"{MODEL} v{version.version} (head on zoo/minilm): accuracy {accuracy:.4f}, "
        f"macro-F1 {f1:.4f} on {test.num_rows} held-out utterances"
    )
    names = {d.name for d in client.deployments.list()}
    if MODEL in names:
        dep = client.deployments.get(MODEL).update(model=f"{MODEL}@production")
    else:
        dep = client.deployments.create(MODEL, model=f"{MODEL}@production", min_replicas=0, max_replicas=1)
    with console.status("starting the intents endpoint …"):
        dep.wait_ready(timeout=180)
    token = client._transport.token or ""
    with httpx.Client(base_url=client.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        r = http.post(f"/v1/endpoints/{dep.name}/predict", json={"inputs": list(QUESTIONS)})
        r.raise_for_status()
    body = r.json()
    rows = [
        [question, label, f"{max(probs):.2f}"]
        for question, label, probs in zip(QUESTIONS, body["outputs"], body["probabilities"], strict=True)
    ]
    console.print(
        table(f"{dep.url}/predict: customer questions", ["question", "intent", "probability"], rows)
    )
    console.print(f"fine-tuning step: {time.monotonic() - started:.1f} s")
