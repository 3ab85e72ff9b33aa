"""The OIP model configuration and statistics documents, and the error bodies of ``/v2`` routes."""

from __future__ import annotations

import json

from aicloud.errors import BadRequestError
from aicloud.serving.asgi import error_body, is_oip_path
from aicloud.serving.metrics import ReplicaMetrics
from aicloud.serving.oip_extensions import model_config, model_statistics
from aicloud.serving.runtime import TensorSpec


def test_config_drops_the_batch_dimension_and_names_triton_types() -> None:
    doc = model_config(
        "m",
        "3",
        backend="numpy",
        inputs=[TensorSpec("input", "FP32", [-1, 4]), TensorSpec("city", "BYTES", [-1])],
        outputs=[TensorSpec("output", "INT64", [-1])],
        max_batch_size=8,
        max_wait_ms=2.5,
        max_queue=100,
    )
    assert doc["name"] == "m" and doc["backend"] == "numpy" and doc["max_batch_size"] == 8
    assert doc["input"] == [
        {"name": "input", "data_type": "TYPE_FP32", "dims": [4]},
        {"name": "city", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}},
    ]
    assert doc["output"][0]["data_type"] == "TYPE_INT64"
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 2500


def test_statistics_count_inference_routes_and_batches() -> None:
    metrics = ReplicaMetrics()
    metrics.count("/predict", 200, 0.002)
    metrics.count("/v2/models/infer", 200, 0.001)
    metrics.count("/v2/models/infer", 400, 0.0005)
    metrics.count("/metrics", 200, 0.1)  # not an inference
    metrics.observe_batch(5, [0.001, 0.002], 0.004)
    model = model_statistics("m", "1", metrics.inference)["model_stats"][0]
    stats = model["inference_stats"]
    assert stats["success"] == {"count": 2, "ns": 3_000_000}
    assert stats["fail"] == {"count": 1, "ns": 500_000}
    assert stats["queue"] == {"count": 2, "ns": 3_000_000}
    assert stats["compute_infer"] == {"count": 2, "ns": 8_000_000}
    assert model["inference_count"] == 5 and model["execution_count"] == 1 and model["last_inference"] > 0
    assert model["batch_stats"][0]["batch_size"] == 5
    assert model["batch_stats"][0]["compute_infer"] == {"count": 1, "ns": 4_000_000}


def test_oip_paths_get_the_protocol_error_shape() -> None:
    assert is_oip_path("/v2") and is_oip_path("/v2/models/m/infer")
    assert not is_oip_path("/predict") and not is_oip_path("/v2x")
    err = BadRequestError("inputs: bad")
    assert json.loads(error_body(err, oip=True)) == {"error": "inputs: bad"}
    assert json.loads(error_body(err))["error"]["message"] == "inputs: bad"
