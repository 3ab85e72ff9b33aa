"""``finetune`` jobs through the real server (docs/finetuning.md): a tiny BERT registered in the
text-model format as the base (as zoo/minilm ships: ONNX embeddings, tokenizer.json, torch weights),
``head`` and ``lora`` fine-tunes registering text classifiers with lineage to the base, the metric
series, the classifier answering through the gateway, and the 422s at submission."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.errors import ValidationError
from aicloud.testing.server import ServerProcess

from model_files import digits_like, register, text_embedding_folder, tiny_bert_folder

#: three intents in the tiny tokenizer's words
PHRASES = {
    "refund": ["refund my money", "send money back", "refund card please", "pay back my money",
               "refund the bill", "money not received refund", "I want a refund", "refund late order"],
    "password": ["password reset", "reset my password", "login email password", "cannot login account",
                 "password change please", "reset login", "account password help", "my password is broken"],
    "delivery": ["where is my order", "delivery is late", "when is my delivery", "order not received",
                 "change delivery address", "where is the delivery", "my order is late", "delivery address"],
}  # fmt: skip


def _frame(rows: list[tuple[str, str]], text: str = "text") -> pd.DataFrame:
    return pd.DataFrame({text: [r[0] for r in rows], "label": [r[1] for r in rows]})


@pytest.fixture(scope="module")
def setup(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("ft")
    rows = [(p, label) for label, phrases in PHRASES.items() for p in phrases]
    train = [r for i, r in enumerate(rows) if i % 4 != 3]
    test = [r for i, r in enumerate(rows) if i % 4 == 3]
    with Client(url=server.url, token=server.token) as c:
        _frame(train).to_csv(folder / "train.csv", index=False)
        _frame(test).to_csv(folder / "test.csv", index=False)
        _frame(train, text="utterance").to_csv(folder / "other.csv", index=False)
        out: dict[str, object] = {
            "train": c.datasets.create("ft-intents-train", folder / "train.csv"),
            "test": c.datasets.create("ft-intents-test", folder / "test.csv"),
            "other": c.datasets.create("ft-intents-utterance", folder / "other.csv"),
            "base": register(c, tiny_bert_folder(folder / "bert"), "ft-tiny-bert"),
            "onnx_only": register(c, text_embedding_folder(folder / "emb")[0], "ft-onnx-encoder"),
            "mlp": register(c, digits_like(folder / "mlp")[0], "ft-not-text"),
        }
    return out


def test_head_finetune_registers_a_text_classifier_that_serves_through_the_gateway(
    client: Client, server: ServerProcess, setup: dict[str, object]
) -> None:
    train, test = setup["train"], setup["test"]
    assert isinstance(train, DatasetVersion) and isinstance(test, DatasetVersion)
    job = client.jobs.finetune(
        base=str(setup["base"]),
        dataset=train,
        eval_dataset=test,
        method="head",
        epochs=40,
        model_name="ft-head",
    )
    job.wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    version = job.model_version
    assert version is not None
    assert version.config["task"] == "text-classification"
    assert version.config["labels"] == ["delivery", "password", "refund"]
    assert version.config["text"]["tokenizer"] == "tokenizer.json"
    assert {"config.json", "model.onnx", "tokenizer.json"} <= set(version.files)
    assert 0.0 <= version.metrics["eval_macro_f1"] <= 1.0
    metrics = job.metrics()
    assert {"eval_accuracy", "eval_macro_f1", "eval_loss", "train_loss"} <= set(metrics)
    assert metrics["eval_macro_f1"]["steps"][-1] == 40
    base = client.models.get(str(setup["base"]))
    lineage = client.models.lineage(f"ft-head:{version.version}")
    assert lineage["parent_version"] == base.id
    assert lineage["derived"] == {"from": str(setup["base"]), "method": "finetune-head"}
    assert lineage["job_kind"] == "finetune"
    assert {d["role"] for d in lineage["datasets"]} == {"train", "eval"}

    dep = client.deployments.create("ft-head", model=f"ft-head:{version.version}")
    try:
        dep.wait_ready(timeout=240)
        texts = ["refund my money", "reset my password", "where is my order"]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as h:
            r = h.post("/v1/endpoints/ft-head/predict", json={"inputs": texts}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["outputs"]) == 3 and set(body["outputs"]) <= {"delivery", "password", "refund"}
        for row in body["probabilities"]:
            assert len(row) == 3 and sum(row) == pytest.approx(1.0, abs=1e-4)
    finally:
        dep.delete()


def test_lora_finetune_keeps_the_adapter_and_a_merged_graph(client: Client, setup: dict[str, object]) -> None:
    job = client.jobs.finetune(
        base=str(setup["base"]), dataset=setup["train"], eval_dataset=setup["test"], method="lora", epochs=2,
        lr=0.01, batch_size=8, lora_rank=4, model_name="ft-lora",
    )  # fmt: skip
    job.wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    version = job.model_version
    assert version is not None
    assert {"model.onnx", "adapter.safetensors", "tokenizer.json"} <= set(version.files)
    adapter = version.config["finetune"]["adapter"]
    assert adapter["rank"] == 4 and adapter["targets"] == ["query", "value"]
    lineage = client.models.lineage(f"ft-lora:{version.version}")
    assert lineage["derived"]["method"] == "finetune-lora"
    assert lineage["parent_version"] == client.models.get(str(setup["base"])).id
    assert len(job.metrics("eval_macro_f1")["eval_macro_f1"]["steps"]) == 2


def test_full_finetune_trains_the_encoder_and_exports_it(client: Client, setup: dict[str, object]) -> None:
    job = client.jobs.finetune(
        base=str(setup["base"]), dataset=setup["train"], eval_dataset=setup["test"], method="full", epochs=2,
        lr=1e-3, batch_size=8, model_name="ft-full",
    )  # fmt: skip
    job.wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    version = job.model_version
    assert version is not None
    assert {"model.onnx", "tokenizer.json"} <= set(
        version.files
    ) and "adapter.safetensors" not in version.files
    assert version.config["finetune"]["method"] == "full" and version.config["labels"][0] == "delivery"
    assert client.models.lineage(f"ft-full:{version.version}")["derived"]["method"] == "finetune-full"


def _refused(client: Client, **fields: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        client.jobs.finetune(**fields)  # type: ignore[arg-type]
    return info.value


def test_bad_finetune_specs_are_422s_naming_the_field(client: Client, setup: dict[str, object]) -> None:
    base, train, test = str(setup["base"]), setup["train"], setup["test"]
    before = {j.id for j in client.jobs.list(limit=1000)}
    err = _refused(client, base=base, dataset=setup["other"], eval_dataset=test)
    assert "spec.dataset" in str(err) and "'text'" in str(err) and "utterance" in str(err)
    err = _refused(client, base=str(setup["mlp"]), dataset=train, eval_dataset=test)
    assert "spec.base" in str(err) and "not a text encoder" in str(err)
    err = _refused(client, base=str(setup["onnx_only"]), dataset=train, eval_dataset=test, method="full")
    assert "spec.base" in str(err) and "encoder.safetensors" in str(err)
    err = _refused(client, base="no-such-model", dataset=train, eval_dataset=test)
    assert "spec.base" in str(err)
    err = _refused(client, base=base, dataset=train, eval_dataset=test, method="distill")
    assert "spec.method" in str(err)
    err = _refused(client, base=base, dataset=train, eval_dataset=test, text="label", target="nope")
    assert "'nope'" in str(err)
    assert {j.id for j in client.jobs.list(limit=1000)} == before  # nothing was queued


def test_a_finetune_job_file_and_the_cli_submit_like_the_sdk(
    tmp_path: Path, server: ServerProcess, setup: dict[str, object]
) -> None:
    from test_cli import run_cli

    doc = {
        "kind": "finetune",
        "name": "ft-from-file",
        "spec": {"base": str(setup["base"]), "dataset": "ft-intents-train", "eval_dataset": "ft-intents-test",
                 "method": "head", "epochs": 5},
    }  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(doc))
    out = run_cli(server, "job", "run", "-f", str(tmp_path / "job.json"), "--no-wait", "-o", "json").stdout
    assert json.loads(out)["kind"] == "finetune"
    args = ["job", "finetune", "--base", str(setup["base"]), "--dataset", "ft-intents-train"]
    proc = run_cli(
        server, *args, "--eval-dataset", "ft-intents-test", "--epochs", "5", "--no-wait", "-o", "json"
    )
    assert json.loads(proc.stdout)["spec"]["method"] == "head"
    bad = run_cli(server, *args, "--eval-dataset", "ft-intents-test", "--text", "utterance", check=False)
    assert bad.returncode == 1 and "spec.dataset" in bad.stdout + bad.stderr


def test_image_transfer_of_the_zoo_digits_cnn(client: Client, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    pulled = client.zoo.pull("digits-cnn")
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    high = frame[frame.label >= 5]
    few = high.groupby("label").head(20)
    few.to_csv(tmp_path / "few.csv", index=False)
    high.drop(index=few.index).to_csv(tmp_path / "rest.csv", index=False)
    train = client.datasets.create("ft-digits-few", tmp_path / "few.csv")
    test = client.datasets.create("ft-digits-rest", tmp_path / "rest.csv")
    job = client.jobs.finetune(
        base="zoo/digits-cnn", task="image-classification", dataset=train, eval_dataset=test,
        method="full", freeze=True, epochs=3, model_name="ft-digits-59",
    )  # fmt: skip
    job.wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    version = job.model_version
    assert version is not None
    assert version.config["labels"] == [5, 6, 7, 8, 9]
    assert version.config["architecture"]["out_features"] == 5
    assert version.config["finetune"]["freeze"] is True
    lineage = client.models.lineage(f"ft-digits-59:{version.version}")
    assert lineage["derived"] == {"from": f"zoo/digits-cnn:{pulled.entry.version}", "method": "finetune-full"}
    with pytest.raises(ValidationError) as info:  # a text task on the CNN
        client.jobs.finetune(base="zoo/digits-cnn", dataset=train, eval_dataset=test)
    assert "not a text encoder" in str(info.value)
