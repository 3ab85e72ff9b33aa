"""Model compression through the real server (docs/compression.md): ONNX export of the built-in MLP
and CNN (the ONNX version predicts as its parent does, loaded and deployed), an export whose outputs
diverge is refused and registers nothing, int8 quantization (dynamic, and static on a calibration
dataset), a calibration dataset of the wrong columns, structured pruning, the comparison table, and
another workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from aicloud import Client
from aicloud.errors import ConflictError, NotFoundError, ValidationError
from aicloud.testing.server import ServerProcess

from helpers import assert_error
from model_files import digits_cnn, digits_like, mlp_folder, pixel_rows, register


def wait_gone(client: Client, name: str) -> None:
    deadline = time.monotonic() + 30
    while name in {d.name for d in client.deployments.list()} and time.monotonic() < deadline:
        time.sleep(0.2)


def test_export_mlp_and_cnn_predict_as_their_parents(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, names = digits_like(tmp_path / "mlp")
    rows = pixel_rows(names, 40, seed=1)[names]
    for kind, parent_folder in (("mlp", folder), ("cnn", digits_cnn(tmp_path))):
        name = unique(f"digits-{kind}")
        parent_ref = register(client, parent_folder, name)
        parent = client.models.get(parent_ref)
        onnx = client.models.export(parent_ref, format="onnx")
        assert onnx.version == parent.version + 1
        assert set(onnx.files) == {"config.json", "model.onnx"}
        assert onnx.lineage["parent_version"] == parent.id
        assert onnx.lineage["derived"]["from"] == parent_ref
        assert onnx.lineage["derived"]["method"] == "onnx"
        assert onnx.lineage["derived"]["max_abs_diff"] <= 1e-4
        assert onnx.config["architecture"] == {"type": "onnx"}
        assert onnx.signature == parent.signature
        a, b = client.models.load(parent_ref), client.models.load(f"{name}:{onnx.version}")
        assert list(b(rows)) == list(a(rows))
        np.testing.assert_allclose(b.predict_proba(rows), a.predict_proba(rows), rtol=0, atol=1e-5)
        # an ONNX version is ONNX already: 409, and nothing is made
        with pytest.raises(ConflictError, match="ONNX already"):
            client.models.export(f"{name}:{onnx.version}")
        assert [v.version for v in client.models.versions(name)] == [parent.version, onnx.version]
        if kind == "mlp":  # through a deployment too (the replica runs the ONNX model)
            dep_name = unique("onnx")
            dep = client.deployments.create(dep_name, model=f"{name}:{onnx.version}").wait_ready(timeout=180)
            try:
                assert dep.predict(rows.head(8).to_dict(orient="records")) == [
                    int(x) for x in a(rows.head(8))
                ]
            finally:
                dep.delete()
                wait_gone(client, dep_name)


def test_an_export_whose_outputs_diverge_is_refused(
    client: Client, http: httpx.Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    # Weights of scale 10 make logits of about 1e4 in float32: torch and ONNX Runtime add the
    # products in a different order, and the rounding differs by far more than 1e-4. Odd layer widths
    # put part of each sum in the kernels' tails, where the orders differ on every instruction set
    # (at widths of 256 an AVX-512 CPU gave both runtimes the same order).
    folder, _ = mlp_folder(
        tmp_path / "big", 64, [1021, 1019], 10, {"task": "tabular-classification"}, scale=10.0
    )
    name = unique("diverge")
    register(client, folder, name)
    err = assert_error(http.post(f"/api/v1/models/{name}/versions/1/export", json={"format": "onnx"}), 422)
    assert "differ from the parent's by up to" in err["message"]
    assert err["details"]["max_abs_diff"] > 1e-4
    assert err["details"]["tolerance"] == 1e-4
    assert [v.version for v in client.models.versions(name)] == [1]  # nothing registered
    # a looser tolerance is not accepted; an unknown format neither
    assert_error(http.post(f"/api/v1/models/{name}/versions/1/export", json={"tolerance": 0.5}), 422)
    assert_error(http.post(f"/api/v1/models/{name}/versions/1/export", json={"format": "tflite"}), 422)


def test_quantize_dynamic_and_static(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> None:
    folder, names = digits_like(tmp_path / "mlp")
    name = unique("quant")
    parent_ref = register(client, folder, name)
    calibration = tmp_path / "calibration.csv"
    pixel_rows(names, 300, seed=2).to_csv(calibration, index=False)
    cal = client.datasets.create(unique("calib"), calibration)
    rows = pixel_rows(names, 200, seed=5)[names]
    parent = client.models.load(parent_ref)
    want = parent(rows)
    for method, kwargs in (
        ("dynamic-int8", {}),
        ("static-int8", {"calibration": f"{cal.name}:{cal.version}"}),
    ):
        v = client.models.quantize(parent_ref, method=method, **kwargs)
        assert v.lineage["derived"]["method"] == method
        assert v.lineage["derived"]["from"] == parent_ref
        assert v.config["quantization"]["per_channel"] is True
        assert isinstance(v.config["quantization"]["reduce_range"], bool)
        if method == "static-int8":
            assert v.lineage["derived"]["calibration"]["name"] == cal.name
        assert 0.9 <= v.metrics["parent_top1_agreement"] <= 1.0
        q = client.models.load(f"{name}:{v.version}")
        assert np.mean(q(rows) == want) >= 0.8  # int8 costs a little: most rows keep their class


def test_calibration_of_the_wrong_columns_is_422(
    client: Client, http: httpx.Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, names = digits_like(tmp_path / "mlp")
    name = unique("calib-bad")
    register(client, folder, name)
    wrong = tmp_path / "wrong.csv"
    pixel_rows(names, 50, seed=0).drop(columns=["pixel_3", "pixel_40"]).to_csv(wrong, index=False)
    ds = client.datasets.create(unique("wrong"), wrong)
    body = {"method": "static-int8", "calibration": ds.name}
    err = assert_error(http.post(f"/api/v1/models/{name}/versions/1/quantize", json=body), 422)
    assert "pixel_3" in err["message"] and "pixel_40" in err["message"]
    assert err["details"][0]["missing"] == ["pixel_3", "pixel_40"]
    with pytest.raises(ValidationError, match="needs a calibration dataset"):
        client.models.quantize(name, method="static-int8")
    with pytest.raises(ValidationError, match=r"dataset .*missing"):
        client.models.quantize(name, method="static-int8", calibration=unique("missing"))
    assert [v.version for v in client.models.versions(name)] == [1]


def test_prune_shrinks_the_layers_and_fine_tunes(
    client: Client, http: httpx.Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, names = digits_like(tmp_path / "mlp")
    config = json.loads((folder / "config.json").read_text())
    config["target"] = "label"
    (folder / "config.json").write_text(json.dumps(config))
    name = unique("prune")
    register(client, folder, name)
    data = tmp_path / "train.csv"
    pixel_rows(names, 200, seed=4).to_csv(data, index=False)
    ds = client.datasets.create(unique("train"), data)

    v = client.models.prune(f"{name}:1", amount=0.5, finetune_epochs=2, dataset=ds.name)
    assert set(v.files) == {"config.json", "model.safetensors"}
    assert v.config["architecture"]["hidden"] == [128, 128]  # the layers really shrank
    assert v.metrics["parameters"] < 0.4 * v.metrics["parent_parameters"]
    assert v.lineage["derived"]["method"] == "prune-structured"
    assert v.lineage["derived"]["finetune_dataset"]["name"] == ds.name
    assert len(v.config["pruning"]["finetune_losses"]) == 2
    rows = pixel_rows(names, 20, seed=6)[names]
    assert client.models.load(f"{name}:{v.version}").predict_proba(rows).shape == (20, 10)

    url = f"/api/v1/models/{name}/versions/1/prune"
    err = assert_error(http.post(url, json={"amount": 0.5}), 422)  # no training data in its lineage
    assert "names no training dataset" in err["message"]
    no_target = tmp_path / "no_target.csv"
    pixel_rows(names, 20, seed=4).drop(columns=["label"]).to_csv(no_target, index=False)
    bare = client.datasets.create(unique("bare"), no_target)
    assert "no target column" in assert_error(http.post(url, json={"dataset": bare.name}), 422)["message"]
    assert_error(http.post(url, json={"amount": 1.0, "finetune_epochs": 0}), 422)
    assert_error(http.post(url, json={"structured": False, "finetune_epochs": 0}), 422)
    onnx = client.models.export(f"{name}:1")
    assert_error(http.post(f"/api/v1/models/{name}/versions/{onnx.version}/prune", json={}), 422)
    plain = client.models.prune(f"{name}:1", amount=0.25, finetune_epochs=0)  # no data needed
    assert plain.config["architecture"]["hidden"] == [192, 192]
    assert [x.version for x in client.models.versions(name)] == [1, 2, 3, 4]


def run_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(
        AICLOUD_HOME=str(server.home), AICLOUD_URL=server.url, AICLOUD_TOKEN=server.token, COLUMNS="220"
    )
    return subprocess.run(
        [sys.executable, "-m", "aicloud", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_export_quantize_and_compare_table(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, names = digits_like(tmp_path / "mlp")
    config = json.loads((folder / "config.json").read_text())
    config["target"] = "label"
    (folder / "config.json").write_text(json.dumps(config))
    name = unique("cmp")
    register(client, folder, name)
    evaluation = tmp_path / "eval.csv"
    pixel_rows(names, 120, seed=9).to_csv(evaluation, index=False)
    ds = client.datasets.create(unique("eval"), evaluation)

    out = run_cli(server, "model", "export", f"{name}:1", "--format", "onnx")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{name}:2 (onnx) from {name}:1" in out.stdout
    out = run_cli(server, "model", "quantize", f"{name}:2", "--method", "dynamic-int8")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run_cli(server, "model", "export", f"{name}:2")
    assert out.returncode == 1 and "ONNX already" in out.stderr and "Traceback" not in out.stderr
    out = run_cli(server, "model", "lineage", f"{name}:3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"← dynamic-int8 of {name}:2" in out.stdout and "← run None" not in out.stdout

    out = run_cli(server, "model", "compare", name, "--dataset", ds.name)
    assert out.returncode == 0, out.stdout + out.stderr
    for label in (f"{name}:1", f"{name}:2", f"{name}:3"):
        assert label in out.stdout
    for column in ("size", "p50 b1 ms", "p50 b32 ms", "accuracy", "1 thread per runtime"):
        assert column in out.stdout

    table = client.models.compare(name, dataset=ds.name)
    assert [v.version for v in table.variants] == [1, 2, 3]
    assert [v.method for v in table.variants] == ["", "onnx", "dynamic-int8"]
    assert [v.runtime for v in table.variants] == ["torch", "onnxruntime", "onnxruntime"]
    assert table.variants[2].parent_version == 2
    truth = pd.read_csv(evaluation)["label"].to_numpy()
    expected = float(np.mean(client.models.load(f"{name}:1")(pd.read_csv(evaluation)[names]) == truth))
    assert table.variants[0].accuracy == pytest.approx(expected)
    assert table.variants[1].accuracy == pytest.approx(expected)  # the ONNX export predicts the same
    assert table.variants[2].size_bytes < table.variants[1].size_bytes  # int8 weights
    assert all(v.p50_ms_b1 > 0 and v.p50_ms_b32 > 0 for v in table.variants)
    assert table.variants[1].cosine_to_first == pytest.approx(1.0, abs=1e-6)
    assert table.threads == 1


def test_another_workspace_cannot_compress_a_version(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, _ = digits_like(tmp_path / "mlp")
    name = unique("private")
    register(client, folder, name)
    other = client.workspaces.create(unique("team"))
    headers = {"Authorization": f"Bearer {other.admin_token.token}"}
    with Client(url=server.url, token=other.admin_token.token) as o:
        with pytest.raises(NotFoundError):
            o.models.export(f"{name}:1")
        with pytest.raises(NotFoundError):
            o.models.compare(name)
    for action in ("export", "quantize", "prune"):
        r = httpx.post(f"{server.url}/api/v1/models/{name}/versions/1/{action}", json={}, headers=headers)
        assert_error(r, 404, "not_found")
    assert_error(httpx.post(f"{server.url}/api/v1/models/{name}/compare", json={}, headers=headers), 404)
    assert [v.version for v in client.models.versions(name)] == [1]
