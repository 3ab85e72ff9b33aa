"""Evaluation and batch prediction jobs on a real server (docs/evaluation.md): a built-in classifier
and a regressor get their metrics recorded on the version; 100k rows are predicted in chunks into a
new dataset version with lineage, equal to ``client.models.load`` on a sample, in bounded memory; bad
input is a 4xx naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.errors import NotFoundError, ValidationError
from aicloud.testing.server import ServerProcess

from helpers import assert_error

#: A generous ceiling on the batch_predict job's peak RSS (torch alone is ~300 MB); the precise
#: comparison of chunk sizes is bench/batch_predict.py.
PEAK_RSS_CEILING = 1_500_000_000


def _upload(client: Client, name: str, frame: pd.DataFrame, folder: Path) -> DatasetVersion:
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return client.datasets.create(name, path)


def _train(client: Client, task: str, ds: DatasetVersion, target: str, name: str) -> str:
    job = client.jobs.train(
        task=task, dataset=ds, eval_dataset=ds, target=target,
        params={"epochs": 40, "hidden": [16]}, model_name=name,
    )  # fmt: skip
    job.wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    version = job.model_version
    assert version is not None
    return f"{version.name}:{version.version}"


@pytest.fixture(scope="module")
def iris(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("iris")
    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    with Client(url=server.url, token=server.token) as client:
        ds = _upload(client, "eval-iris", frame, folder)
        ref = _train(client, "tabular-classification", ds, "species", "eval-iris-mlp")
    return {"ref": ref, "dataset": ds.ref, "frame": frame}


def test_evaluate_records_classifier_metrics_on_the_version(client: Client, iris: dict[str, Any]) -> None:
    metrics = client.models.evaluate(iris["ref"], iris["dataset"], timeout=300)
    assert set(metrics) == {"accuracy", "f1_macro", "roc_auc"}
    assert metrics["accuracy"] > 0.7 and metrics["roc_auc"] > 0.8, metrics
    version = client.models.get(iris["ref"])
    name, number = iris["dataset"].split(":")
    assert version.metrics[f"eval:{name}:{number}:accuracy"] == metrics["accuracy"]
    assert any(not k.startswith("eval:") for k in version.metrics)  # its training metrics are kept


def test_evaluate_a_regressor(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    frame["y"] = 3 * frame["a"] - 2 * frame["b"] + 0.1 * rng.normal(size=400)
    ds = _upload(client, unique("eval-reg"), frame, tmp_path)
    ref = _train(client, "tabular-regression", ds, "y", unique("eval-reg-mlp"))
    metrics = client.models.evaluate(ref, ds, timeout=300)
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["r2"] > 0.5 and metrics["rmse"] < 2.5, metrics


def test_batch_predict_100k_rows_in_chunks(
    client: Client, iris: dict[str, Any], tmp_path: Path, unique: Callable[[str], str]
) -> None:
    rng = np.random.default_rng(2)
    base = iris["frame"].drop(columns=["species"])
    big = base.sample(n=100_000, replace=True, random_state=3).reset_index(drop=True)
    big = big + rng.normal(0, 0.05, big.shape).round(3)
    big.insert(0, "row_id", np.arange(len(big)))
    ds = _upload(client, unique("eval-big"), big, tmp_path)
    out_name = unique("eval-preds")
    job = client.models.batch_predict(iris["ref"], ds, output=out_name, chunk_rows=10_000, wait=False)
    job.wait(timeout=600)
    assert job.status == "succeeded", job.logs()[-3000:]
    rows_done = job.metrics("rows_done")["rows_done"]["values"]
    assert rows_done[-1] == 100_000 and len(rows_done) == 10
    peak = int(job.info.usage.get("peak_rss_bytes") or 0)
    assert peak < PEAK_RSS_CEILING, job.info.usage
    out = client.datasets.versions(out_name)[-1]
    assert out.num_rows == 100_000
    assert out.lineage["source"] == "batch_predict" and out.lineage["job_id"] == job.id
    assert out.lineage["model"]["ref"] == iris["ref"]
    assert out.lineage["dataset"]["name"] == ds.name and out.lineage["dataset"]["version"] == ds.version
    path = out.download(tmp_path / "preds.csv")
    preds = pd.read_csv(path)
    assert preds["row_id"].tolist() == list(range(100_000))  # input order, input columns kept
    assert {"prediction", "proba_0", "proba_1", "proba_2"} <= set(preds.columns)
    sample = preds.sample(n=200, random_state=4)
    model = client.models.load(iris["ref"])
    expected = np.asarray(model(sample[list(base.columns)]))
    assert (expected == sample["prediction"].to_numpy()).all()


def test_batch_predict_defaults_its_output_name(client: Client, iris: dict[str, Any]) -> None:
    out = client.models.batch_predict(iris["ref"], iris["dataset"], timeout=300)
    assert out.name == f"{iris['dataset'].split(':')[0]}-predictions" and out.num_rows == 150


def test_bad_input_is_a_4xx_naming_the_field(
    client: Client,
    server: ServerProcess,
    iris: dict[str, Any],
    http: httpx.Client,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    def submit(kind: str, spec: dict[str, Any]) -> str:
        err = assert_error(http.post("/api/v1/jobs", json={"kind": kind, "spec": spec}), 422)
        return str(err["details"][0]["field"]) if isinstance(err["details"], list) else str(err["details"])

    data = {"data": iris["dataset"]}
    assert submit("evaluate", {"model": iris["ref"], "datasets": data, "target": "nope"}) == "spec.target"
    assert submit("evaluate", {"model": "no-such-model", "datasets": data}) == "spec.model"
    missing = {"model": iris["ref"], "datasets": {"data": "no-such-dataset"}}
    assert submit("batch_predict", missing) == "spec.datasets.data"
    assert submit("batch_predict", {"model": iris["ref"], "datasets": data, "bogus": 1}) == "spec.bogus"
    narrow = _upload(client, unique("eval-narrow"), pd.DataFrame({"sepal_length": [5.1, 4.9]}), tmp_path)
    assert submit("batch_predict", {"model": iris["ref"], "datasets": {"data": narrow.ref}}) == (
        "spec.datasets.data"
    )
    with pytest.raises(ValidationError):
        client.models.evaluate(iris["ref"], "no-such-dataset")
    # another workspace sees neither the model nor its metrics
    team = client.workspaces.create(unique("eval-team"))
    with Client(url=server.url, token=team.admin_token.token) as o:
        with pytest.raises(ValidationError):
            o.models.evaluate(iris["ref"], iris["dataset"])
        with pytest.raises(NotFoundError):
            o.models.record_metrics(iris["ref"].split(":")[0], 1, {"eval:x:1:accuracy": 1.0})
    name, version = iris["ref"].split(":")
    r = http.post(f"/api/v1/models/{name}/versions/{version}/metrics", json={"metrics": {"accuracy": 1}})
    assert_error(r, 422)


TENSOR_SCRIPT = """
import pandas as pd, torch
from aicloud.training import save_model

frame = pd.read_csv("data.csv")
X = torch.tensor(frame.drop(columns=["y"]).to_numpy(), dtype=torch.float32)
y = torch.tensor(frame["y"].to_numpy())
model = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
opt = torch.optim.Adam(model.parameters(), lr=0.02)
for _ in range(60):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    opt.step()
save_model(model, example_input=X[:2], name=NAME)
"""


def test_a_model_of_tensor_inputs_from_your_own_code(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(300, 7)), columns=[f"f{i}" for i in range(7)])
    frame["y"] = (frame["f0"] + frame["f3"] > 0).astype(int)
    code = tmp_path / "code"
    code.mkdir()
    name = unique("eval-tensor")
    (code / "train.py").write_text(TENSOR_SCRIPT.replace("NAME", repr(name)))
    frame.to_csv(code / "data.csv", index=False)
    job = client.jobs.run(command="python train.py", code=code)
    job.wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    ref = f"{name}:1"
    labelled = _upload(client, unique("eval-tensor-data"), frame, tmp_path)
    metrics = client.models.evaluate(ref, labelled, target="y", timeout=300)
    assert set(metrics) == {"accuracy", "f1_macro", "roc_auc"} and metrics["accuracy"] > 0.8, metrics
    features = _upload(client, unique("eval-tensor-x"), frame.drop(columns=["y"]), tmp_path)
    out = client.models.batch_predict(ref, features, chunk_rows=64, timeout=300)
    preds = pd.read_csv(out.download(tmp_path / "tensor-preds.csv"))
    want = np.asarray(client.models.load(ref).outputs(frame.drop(columns=["y"]).to_numpy(np.float32)))
    assert (preds["prediction"].to_numpy() == want.argmax(axis=1)).all()


def test_cli_model_evaluate_and_predict(
    server: ServerProcess, iris: dict[str, Any], unique: Callable[[str], str]
) -> None:
    from test_cli import run_cli

    shown = run_cli(server, "model", "evaluate", iris["ref"], iris["dataset"], "--no-progress")
    assert "accuracy" in shown.stdout and "roc_auc" in shown.stdout
    out = unique("eval-cli-preds")
    made = json.loads(
        run_cli(server, "model", "predict", iris["ref"], iris["dataset"], "--to", out, "-o", "json").stdout
    )
    assert made["name"] == out and made["num_rows"] == 150 and made["lineage"]["source"] == "batch_predict"


def test_parquet_in_parquet_out(
    client: Client, iris: dict[str, Any], tmp_path: Path, unique: Callable[[str], str]
) -> None:
    path = tmp_path / "iris.parquet"
    iris["frame"].to_parquet(path, index=False)
    ds = client.datasets.create(unique("eval-pq"), path)
    metrics = client.models.evaluate(iris["ref"], ds, chunk_rows=40, timeout=300)
    assert metrics["accuracy"] > 0.7
    out = client.models.batch_predict(iris["ref"], ds, chunk_rows=40, timeout=300)
    assert out.format == "parquet" and out.num_rows == 150
    preds = pd.read_parquet(out.download(tmp_path / "out.parquet"))
    assert preds["species"].tolist() == iris["frame"]["species"].tolist()
    assert np.allclose(preds[["proba_0", "proba_1", "proba_2"]].sum(axis=1), 1.0)


def test_a_text_classifier_reads_its_text_column(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    import torch

    from aicloud.artifacts.loader import load_model
    from aicloud.artifacts.text import TextTokenizer, save_text_model

    from model_files import TinyEncoder, register, tiny_tokenizer

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = TinyEncoder()
            self.head = torch.nn.Linear(32, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(input_ids, attention_mask))

    torch.manual_seed(0)
    labels = ["delivery", "password", "refund"]
    folder = save_text_model(
        tmp_path / "clf", Classifier().eval(), tiny_tokenizer(), "text-classification", labels=labels,
        example_texts=["reset my password", "where is my order"],
    )  # fmt: skip
    ref = register(client, folder, unique("eval-text"))
    texts = ["reset my password", "where is my order", "refund my money", "delivery is late"] * 5
    frame = pd.DataFrame({"utterance": texts, "label": ["password", "delivery", "refund", "delivery"] * 5})
    ds = _upload(client, unique("eval-texts"), frame, tmp_path)
    metrics = client.models.evaluate(ref, ds, target="label", text="utterance", timeout=300)
    assert set(metrics) == {"accuracy", "f1_macro", "roc_auc"}, metrics
    out = client.models.batch_predict(ref, ds, text="utterance", timeout=300)
    preds = pd.read_csv(out.download(tmp_path / "text-preds.csv"))
    local = load_model(folder)
    logits = local.run_features(TextTokenizer.load(folder).encode(texts).arrays)
    assert preds["prediction"].tolist() == [labels[i] for i in np.argmax(logits, axis=1)]
    with pytest.raises(ValidationError) as err:  # the default text column is `text`
        client.models.evaluate(ref, ds, target="label")
    assert "spec.text" in str(err.value)
