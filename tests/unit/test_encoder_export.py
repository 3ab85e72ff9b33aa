"""An encoder saved from your own code (several named int64 inputs of any length, a float vector per
row): the ONNX export's signature (free sequence axes, the examples kept), its check against the
module, rows of any length, and dynamic int8 quantization and the comparison reporting the cosine to
the parent (docs/compression.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aicloud.artifacts.format import save_onnx
from aicloud.artifacts.inputs import signature_examples, tensor_inputs
from aicloud.artifacts.loader import load_model
from aicloud.compression import worker
from aicloud.errors import BadRequestError, ValidationError
from aicloud.serving.runtimes import example_features, select

from model_files import ENCODER_AXES, TinyEncoder, encoder_folder, token_batch


def test_the_export_has_free_sequence_axes_and_keeps_its_examples(tmp_path: Path) -> None:
    folder, module = encoder_folder(tmp_path / "enc")
    config = json.loads((folder / "config.json").read_text())
    sig = config["signature"]
    assert sig["inputs"] == [
        {"name": "input_ids", "dtype": "int64", "shape": [-1, -1]},
        {"name": "attention_mask", "dtype": "int64", "shape": [-1, -1]},
    ]
    assert np.asarray(sig["examples"]["attention_mask"]).shape == (4, 12)
    kept = signature_examples(config, rows=32)
    assert kept is not None and kept["input_ids"].shape == (32, 12) and kept["input_ids"].dtype == np.int64
    feed = example_features(config)
    assert isinstance(feed, dict) and feed["attention_mask"].sum() > 0  # the examples, not zeros
    model = load_model(folder)
    for length in (3, 12, 40):  # any sequence length, as the module
        batch = token_batch(5, length, seed=length)
        with torch.inference_mode():
            want = module(**batch).numpy()
        got = model.run_features({k: v.numpy() for k, v in batch.items()})
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # rows of one request: one length each; of different lengths, refused saying to pad them
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]}, {"input_ids": [5], "attention_mask": [1]}]
    with pytest.raises(BadRequestError, match="pad them"):
        model(rows)
    assert model(rows[:1]).shape == (1, 32)


def test_an_export_that_diverges_is_refused_naming_the_difference(tmp_path: Path) -> None:
    module = TinyEncoder(scale=1e5).eval()  # outputs of 1e5: float32 rounding differs by ~1e-3
    with pytest.raises(ValidationError, match="differ from the module's by up to") as err:
        save_onnx(tmp_path, module, token_batch(4, 12), {}, dynamic_axes=ENCODER_AXES)
    assert err.value.details["max_abs_diff"] > 1e-4 and err.value.details["tolerance"] == 1e-4
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "config.json").exists()


def test_dynamic_axes_name_inputs_and_axes_that_exist(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="none of the inputs"):
        save_onnx(tmp_path, TinyEncoder(), token_batch(2, 4), {}, dynamic_axes={"ids": [1]})
    with pytest.raises(ValidationError, match="no axis 2"):
        save_onnx(tmp_path, TinyEncoder(), token_batch(2, 4), {}, dynamic_axes={"input_ids": [2]})


def test_quantize_and_compare_report_the_cosine_to_the_parent(tmp_path: Path) -> None:
    folder, _ = encoder_folder(tmp_path / "enc")
    report = worker.quantize({"parent": str(folder), "out": str(tmp_path / "int8"), "method": "dynamic-int8"})
    assert report["check"]["cosine"] > 0.99 and "top1_agreement" not in report["check"]
    assert tensor_inputs(json.loads((tmp_path / "int8" / "config.json").read_text()))[0].shape == (-1,)
    rows = worker.compare(
        {
            "variants": [
                {"label": "fp32", "folder": str(folder)},
                {"label": "int8", "folder": str(tmp_path / "int8")},
            ]
        }
    )["variants"]
    assert rows[0]["cosine_to_parent"] is None and rows[0]["accuracy"] is None
    assert 0.99 < rows[1]["cosine_to_parent"] <= 1.0 + 1e-9
    assert all(r["p50_ms_b1"] > 0 and r["p50_ms_b32"] > 0 for r in rows)
    _, choice = select(
        "auto", tmp_path / "int8", json.loads((tmp_path / "int8" / "config.json").read_text()), 1
    )
    assert choice.runtime == "onnxruntime"


def test_a_service_gets_the_model_as_self_model_before_setup(tmp_path: Path) -> None:
    from aicloud import Service, handler
    from aicloud.serving.app import ReplicaConfig, build_app
    from aicloud.serving.runtimes import ServiceModel

    folder, module = encoder_folder(tmp_path / "enc")
    seen: dict[str, object] = {}

    class Embed(Service):
        def setup(self) -> None:
            assert self.model is not None
            seen["names"] = self.model.input_names

        @handler
        def embed(self, ids: list[int]) -> list[float]:
            assert self.model is not None
            x = np.asarray([ids], dtype=np.int32)  # cast to the model's int64
            return self.model(input_ids=x, attention_mask=np.ones_like(x))[0].tolist()

    model = ServiceModel(folder, "auto", threads=1)
    with pytest.raises(RuntimeError, match="not loaded yet"):
        model(input_ids=np.zeros((1, 2)))
    app = build_app(ReplicaConfig(key="k"), service=Embed, model=model, start=True)
    assert seen["names"] == ["input_ids", "attention_mask"]
    assert model.runtime == "onnxruntime" and model.choice.startswith("onnxruntime (auto:")
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [
        ("input_ids", "int64", (-1,)),
        ("attention_mask", "int64", (-1,)),
    ]
    batch = token_batch(3, 7, seed=5)
    with torch.inference_mode():
        want = module(**batch).numpy()
    feed = {k: v.numpy() for k, v in batch.items()}
    np.testing.assert_allclose(model(feed), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model(**feed), want, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match="not both"):
        model(feed, input_ids=feed["input_ids"])
    assert app.service is not None and app.service.model is model
    with pytest.raises(TypeError, match="give service"):
        build_app(ReplicaConfig(key="k"), runtime=object(), model=model)  # type: ignore[arg-type]


def test_a_model_deployment_batches_requests_of_different_lengths_apart(tmp_path: Path) -> None:
    from aicloud.serving.runtime import ArtifactRuntime

    folder, module = encoder_folder(tmp_path / "enc")
    runtime = ArtifactRuntime(folder, None, threads=1)
    runtime.load()
    runtime.warmup()
    batches = [token_batch(2, 5, seed=1), token_batch(1, 9, seed=2), token_batch(3, 5, seed=3)]
    prepared = [
        runtime.prepare(
            [{k: v[i].tolist() for k, v in b.items()} for i in range(len(b["input_ids"]))], "inputs"
        )
        for b in batches
    ]
    answers = runtime.run_batch(prepared)  # one call for the two of length 5, one for the 9
    for b, got in zip(batches, answers, strict=True):
        with torch.inference_mode():
            want = module(**b).numpy()
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)
