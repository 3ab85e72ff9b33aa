"""An encoder saved from your own code through the real server (docs/compression.md, docs/serving.md):
two int64 inputs of any length registered as save_model exports them (ONNX checked against the
module, the examples kept), dynamic int8 quantization with its cosine to the parent, the comparison
reporting the cosine instead of accuracy, and a deployment of a Service that uses the version as
``self.model`` with ``runtime: auto`` (it answers through the gateway, says which runtime it chose
and why, and torch is not imported); a runtime on a Service without a model is a 422, as is one that cannot
run the version."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import run_cli

from aicloud import Client
from aicloud.errors import ValidationError
from aicloud.testing.server import ServerProcess

from model_files import encoder_folder, register

SERVICE = '''
"""A sentence encoder Service: "tokenizes" (a character's code modulo the vocabulary; 0 pads), runs
the registered model as self.model, rounds the vectors."""

import sys

import numpy as np

from aicloud import Service, handler


def tokenize(texts):
    length = max(len(t) for t in texts)
    ids = np.zeros((len(texts), length), dtype=np.int64)
    mask = np.zeros((len(texts), length), dtype=np.int64)
    for i, text in enumerate(texts):
        ids[i, : len(text)] = [1 + ord(c) % 99 for c in text]
        mask[i, : len(text)] = 1
    return ids, mask


class Encoder(Service):
    def setup(self) -> None:
        self.names = self.model.input_names  # known before setup() runs

    @handler(batch=True, max_batch_size=8)
    def embed(self, text: list[str]) -> list[list[float]]:
        ids, mask = tokenize(text)
        return self.model(input_ids=ids, attention_mask=mask).tolist()

    @handler
    def info(self) -> dict:
        return {
            "inputs": [[t.name, t.dtype, list(t.shape)] for t in self.model.inputs],
            "names": self.names,
            "runtime": self.model.runtime,
            "torch_imported": "torch" in sys.modules,
        }
'''


def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    length = max(len(t) for t in texts)
    ids = torch.zeros((len(texts), length), dtype=torch.int64)
    mask = torch.zeros((len(texts), length), dtype=torch.int64)
    for i, text in enumerate(texts):
        ids[i, : len(text)] = torch.tensor([1 + ord(c) % 99 for c in text])
        mask[i, : len(text)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def runtime_of(client: Client, name: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        ready = [r for r in client.deployments.get(name).info.replicas if r.state.value == "ready"]
        if ready and ready[0].runtime:
            return ready[0].runtime
        assert time.monotonic() < deadline, f"no runtime reported for {name}: {ready}"
        time.sleep(0.2)


SAVE_JOB = """
import sys

import torch
from model_files import ENCODER_AXES, TinyEncoder, token_batch

from aicloud.training import save_model

torch.manual_seed(0)
encoder = TinyEncoder(scale=float(sys.argv[1])).eval()
save_model(encoder, example_input=token_batch(4, 12), dynamic_axes=ENCODER_AXES, name=sys.argv[2])
"""


def test_save_model_in_a_job_registers_an_encoder_and_refuses_one_that_diverges(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    code = tmp_path / "job"
    code.mkdir()
    (code / "save.py").write_text(SAVE_JOB)
    shutil.copy(Path(__file__).parents[1] / "model_files.py", code / "model_files.py")
    name = unique("job-encoder")
    job = client.jobs.run(command=f"python save.py 1 {name}", code=code).wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    version = client.models.get(name)
    assert [i["shape"] for i in version.signature["inputs"]] == [[-1, -1], [-1, -1]]
    assert len(version.signature["examples"]["input_ids"]) == 4
    # outputs of 1e5: ONNX Runtime differs from torch by ~1e-3, more than 1e-4: refused, nothing made
    bad = client.jobs.run(command=f"python save.py 1e5 {name}", code=code).wait(timeout=300)
    assert bad.status == "failed"
    assert "differ from the module's by up to" in bad.logs()
    assert [v.version for v in client.models.versions(name)] == [version.version]


def test_quantize_and_compare_an_encoder(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, _ = encoder_folder(tmp_path / "enc")
    name = unique("encoder")
    ref = register(client, folder, name)
    parent = client.models.get(ref)
    assert parent.signature["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": [-1, -1]}
    assert "examples" in parent.signature
    with pytest.raises(Exception, match="ONNX already"):  # save_model exported (and checked) it
        client.models.export(ref)
    int8 = client.models.quantize(ref, method="dynamic-int8")
    assert int8.lineage["parent_version"] == parent.id
    assert int8.metrics["parent_cosine"] > 0.99 and "parent_top1_agreement" not in int8.metrics
    assert int8.signature["inputs"] == parent.signature["inputs"]
    table = client.models.compare(name)
    first, second = table.variants
    assert (first.version, second.version) == (parent.version, int8.version)
    assert first.accuracy is None and second.accuracy is None  # an encoder: no labels
    assert second.cosine_to_first is not None and 0.99 < second.cosine_to_first <= 1.0 + 1e-9
    assert second.size_bytes < first.size_bytes


@pytest.mark.timeout(600)
def test_a_service_uses_the_registered_encoder_with_runtime_auto(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, module = encoder_folder(tmp_path / "enc")
    name = unique("enc-svc")
    ref = register(client, folder, name)
    client.models.set_alias(name, "production", int(ref.split(":")[1]))
    code = tmp_path / "svc"
    code.mkdir()
    (code / "encoder.py").write_text(SERVICE)
    # a runtime on a Service without a model: 422 naming runtime
    with pytest.raises(ValidationError, match="runtime chooses what runs a registered model"):
        client.deployments.create(
            unique("no-model"), service=code, entrypoint="encoder.py:Encoder", runtime="auto"
        )
    # a runtime that cannot run the version (ONNX): 422, as for a model deployment
    with pytest.raises(ValidationError, match="torch cannot run it"):
        client.deployments.create(
            unique("torch"),
            model=f"{name}@production",
            service=code,
            entrypoint="encoder.py:Encoder",
            runtime="torch",
        )
    dep_name = unique("embed")
    dep = client.deployments.create(
        dep_name, model=f"{name}@production", service=code, entrypoint="encoder.py:Encoder", runtime="auto"
    )
    try:
        dep.wait_ready(timeout=240)
        texts = ["hello there", "a much longer sentence than the first one", "x"]
        with torch.inference_mode():
            want = module(**tokenize(texts)).numpy()
        for i, text in enumerate(texts):  # one request each: the batcher pads nothing across requests
            got = np.asarray(dep.call("embed", {"text": text}))
            with torch.inference_mode():
                alone = module(**tokenize([text])).numpy()[0]
            np.testing.assert_allclose(got, alone, rtol=0, atol=1e-4)
            assert float(np.dot(got, want[i]) / np.linalg.norm(got) / np.linalg.norm(want[i])) > 0.999
        info = dep.call("info", {})
        assert info == {
            "inputs": [["input_ids", "int64", [-1]], ["attention_mask", "int64", [-1]]],
            "names": ["input_ids", "attention_mask"],
            "runtime": "onnxruntime",
            "torch_imported": False,
        }
        line = runtime_of(client, dep_name)
        assert line.startswith("onnxruntime (auto: the only runtime that can serve it"), line
        shown = run_cli(server, "deploy", "show", dep_name).stdout
        assert f"encoder.py:Encoder with {name}@production → v1" in shown, shown
        assert "runtime onnxruntime (auto:" in shown, shown
        assert client.deployments.get(dep_name).info.model_version == int(ref.split(":")[1])
    finally:
        dep.delete()
