"""Every kind of registered model serves through the model runtime, and its endpoint answers as
``client.models.load`` of the same version does, row for row: the built-in MLP (tabular, with nulls and an
unseen category), the CNN (image task), your own ``nn.Module`` saved with ``save_model(...,
example_input=X[:2])`` from a command job (one tensor input), and one with several named inputs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.client import DatasetVersion
from aicloud.testing.server import ServerProcess

from helpers import assert_error


def deployed(client: Client, name: str, ref: str) -> Iterator[Any]:
    """Deploy ``ref`` as ``name`` (ready), yield it, delete it (its replica frees the CPUs)."""
    dep = client.deployments.create(name, model=ref).wait_ready(timeout=180)
    try:
        yield dep
    finally:
        dep.delete()
        deadline = time.monotonic() + 30
        while name in {d.name for d in client.deployments.list()} and time.monotonic() < deadline:
            time.sleep(0.2)


def ref_of(job: Any) -> str:
    job.wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    version = job.model_version
    assert version is not None
    return f"{version.name}:{version.version}"


def upload(client: Client, name: str, frame: pd.DataFrame, folder: Path) -> DatasetVersion:
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return client.datasets.create(name, path)


def test_builtin_mlp_with_nulls_and_an_unseen_category(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    rng = np.random.default_rng(0)
    n = 240
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50, 15, n).round(1),
            "city": rng.choice(["oslo", "rome", "lima"], n),
        }
    )
    frame["label"] = ((frame["age"] > 45) ^ (frame["city"] == "rome")).astype(int)
    frame.loc[::7, "age"] = None  # missing values that training accepts
    frame.loc[3::11, "city"] = None
    ds = upload(client, unique("kinds-tab"), frame, tmp_path)
    name = unique("kinds-mlp")
    job = client.jobs.train(
        task="tabular-classification",
        dataset=ds,
        eval_dataset=ds,
        target="label",
        params={"epochs": 20, "hidden": [16]},
        model_name=name,
    )
    ref = ref_of(job)
    rows: list[dict[str, Any]] = [
        {"age": 30.0, "income": 40.0, "city": "oslo"},
        {"age": 60.0, "income": 55.5, "city": "rome"},
        {"age": None, "income": 45.0, "city": "lima"},  # a null: the train mean
        {"age": 50.0, "income": None, "city": None},
        {"age": 25.0, "income": 70.0, "city": "atlantis"},  # unseen: all-zeros one-hot, like a null
        {"age": 25.0, "income": 70.0, "city": None},
    ]
    local = client.models.load(ref)
    want = local(rows).tolist()
    features = local.features(rows)
    assert features[4].tolist() == features[5].tolist()  # the one rule for an unseen category
    for dep in deployed(client, unique("kinds-mlp"), ref):
        assert dep.predict(rows) == want
        assert dep.predict([[r["age"], r["income"], r["city"]] for r in rows]) == want  # signature order
        with endpoint_http(server) as h:
            bad = h.post(f"{dep.url}/predict", json={"inputs": [{"age": "old", "income": 1, "city": "oslo"}]})
            err = assert_error(bad, 400)
            assert err["details"][0]["field"] == "inputs[0].age"


def test_builtin_cnn_on_an_image_task(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> None:
    digits = load_digits(as_frame=True).frame.rename(columns={"target": "label"}).head(300)
    ds = upload(client, unique("kinds-img"), digits, tmp_path)
    name = unique("kinds-cnn")
    job = client.jobs.train(
        task="image-classification",
        dataset=ds,
        eval_dataset=ds,
        target="label",
        params={"epochs": 2, "hidden": [16]},
        model_name=name,
    )
    ref = ref_of(job)
    pixels = digits.drop(columns=["label"])
    rows = pixels.tail(6).to_numpy().tolist()
    local = client.models.load(ref)
    assert local.module is not None and type(local.module).__name__ == "CNN"
    want = local(rows).tolist()
    for dep in deployed(client, unique("kinds-cnn"), ref):
        assert dep.predict(rows) == want
        assert dep.predict(pixels.tail(6).to_dict(orient="records")) == want


TENSOR_SCRIPT = """
import pandas as pd, torch
from aicloud.training import save_model

X = torch.tensor(pd.read_csv("data.csv").to_numpy(), dtype=torch.float32)
y = (X[:, 0] + X[:, 3] > 0).long()
model = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(30):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    opt.step()
save_model(model, example_input=X[:2], name=NAME)
"""

TWO_INPUT_SCRIPT = """
import pandas as pd, torch
from aicloud.training import save_model

class Wide(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.num = torch.nn.Linear(3, 4)
        self.extra = torch.nn.Linear(4, 4)
        self.out = torch.nn.Linear(4, 2)

    def forward(self, num, extra):
        return self.out(torch.relu(self.num(num) + self.extra(extra)))

X = torch.tensor(pd.read_csv("data.csv").to_numpy(), dtype=torch.float32)
model = Wide()
save_model(model, example_input={"extra": X[:2, 3:], "num": X[:2, :3]}, name=NAME)
"""


def run_script(client: Client, tmp_path: Path, script: str, name: str) -> str:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(script.replace("NAME", repr(name)))
    rng = np.random.default_rng(1)
    pd.DataFrame(rng.normal(size=(64, 7)), columns=[f"f{i}" for i in range(7)]).to_csv(
        code / "data.csv", index=False
    )
    return ref_of(client.jobs.run(command="python train.py", code=code))


def test_custom_module_with_one_tensor_input(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    ref = run_script(client, tmp_path, TENSOR_SCRIPT, unique("kinds-custom"))
    rows = np.random.default_rng(2).normal(size=(5, 7)).round(3).tolist()
    local = client.models.load(ref)
    assert local.signature["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 7]}]
    want = local(rows)
    for dep in deployed(client, unique("kinds-custom"), ref):
        np.testing.assert_allclose(dep.predict(rows), want, rtol=0, atol=1e-5)
        np.testing.assert_allclose(dep.predict([{"input": r} for r in rows]), want, rtol=0, atol=1e-5)
        with endpoint_http(server) as h:
            err = assert_error(h.post(f"{dep.url}/predict", json={"inputs": [rows[0][:6]]}), 400)
            assert err["details"][0]["field"] == "inputs[0]" and "expected shape [7]" in err["message"]


def test_custom_module_with_several_named_inputs(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    ref = run_script(client, tmp_path, TWO_INPUT_SCRIPT, unique("kinds-wide"))
    rng = np.random.default_rng(3)
    rows = [{"num": rng.normal(size=3).tolist(), "extra": rng.normal(size=4).tolist()} for _ in range(4)]
    local = client.models.load(ref)
    assert [i["name"] for i in local.signature["inputs"]] == ["num", "extra"]  # forward's order
    want = local(rows)
    for dep in deployed(client, unique("kinds-wide"), ref):
        np.testing.assert_allclose(dep.predict(rows), want, rtol=0, atol=1e-5)
        num = np.array([r["num"] for r in rows], dtype=np.float32)
        extra = np.array([r["extra"] for r in rows], dtype=np.float32)
        body = {
            "inputs": [
                {"name": "num", "datatype": "FP32", "shape": list(num.shape), "data": num.ravel().tolist()},
                {
                    "name": "extra",
                    "datatype": "FP32",
                    "shape": list(extra.shape),
                    "data": extra.ravel().tolist(),
                },
            ]
        }
        with endpoint_http(server) as h:
            meta = h.get(f"{dep.url}/v2/models/{dep.name}").json()
            assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [("num", [-1, 3]), ("extra", [-1, 4])]
            out = h.post(f"{dep.url}/v2/models/{dep.name}/infer", json=body)
            assert out.status_code == 200, out.text
            tensor = out.json()["outputs"][0]
            got = np.array(tensor["data"]).reshape(tensor["shape"])
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
            err = assert_error(h.post(f"{dep.url}/predict", json={"inputs": [{"num": [1, 2, 3]}]}), 400)
            assert "missing input(s) 'extra'" in err["message"]


def endpoint_http(server: ServerProcess) -> httpx.Client:
    return httpx.Client(headers={"Authorization": f"Bearer {server.token}"}, timeout=60)
