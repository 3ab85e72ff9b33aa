"""The Open Inference Protocol's model configuration and statistics extensions (Triton's JSON).

    GET /v2/models/<model>[/versions/<v>]/config  → model_config(...)
    GET /v2/models[/<model>[/versions/<v>]]/stats → model_statistics(...)

The configuration is Triton's ``ModelConfig`` as JSON, built from the served signature: ``input``
and ``output`` with ``data_type`` (``TYPE_FP32``...) and ``dims`` without the batch dimension
(``max_batch_size`` > 0 makes it implicit); a one-dimensional ``[-1]`` tensor is ``dims [1]`` with
``reshape: {shape: []}``, as Triton writes a tensor of one value per row. The statistics are the
replica's :class:`~aicloud.serving.metrics.InferenceStats`, in the statistics extension's shape.
"""

from __future__ import annotations

from typing import Any

from aicloud.serving.metrics import Duration, InferenceStats
from aicloud.serving.runtime import TensorSpec

#: What ``GET /v2`` lists in ``extensions``.
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]


def _tensor_config(spec: TensorSpec) -> dict[str, Any]:
    dims = [int(d) for d in spec.shape[1:]]  # the first dimension is the batch
    doc: dict[str, Any] = {"name": spec.name, "data_type": f"TYPE_{spec.datatype}"}
    if dims:
        doc["dims"] = dims
    else:
        doc["dims"], doc["reshape"] = [1], {"shape": []}
    if spec.datatype == "BYTES":
        doc["data_type"] = "TYPE_STRING"  # Triton's config name of the protocol's BYTES
    return doc


def model_config(
    name: str,
    version: str,
    *,
    backend: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    max_batch_size: int,
    max_wait_ms: float,
    max_queue: int,
) -> dict[str, Any]:
    """Triton's model configuration: ``backend`` is the runtime's engine (``numpy``, ``onnx``,
    ``torch``...), the tensors are the served signature's (empty while loading or for a Service)."""
    return {
        "name": name,
        "platform": "aicloud",
        "backend": backend,
        "version_policy": {"specific": {"versions": [version]}},
        "max_batch_size": max_batch_size,
        "input": [_tensor_config(t) for t in inputs],
        "output": [_tensor_config(t) for t in outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(max_wait_ms * 1000),
            "default_queue_policy": {"max_queue_size": max_queue},
        },
    }


def model_statistics(name: str, version: str, stats: InferenceStats) -> dict[str, Any]:
    """The statistics extension's answer for the one model a replica serves."""
    none = Duration().to_json()
    per_request = {
        "success": stats.success.to_json(),
        "fail": stats.fail.to_json(),
        "queue": stats.queue.to_json(),
        "compute_input": none,
        "compute_infer": stats.compute_infer.to_json(),
        "compute_output": none,
        "cache_hit": none,
        "cache_miss": none,
    }
    batches = [
        {"batch_size": size, "compute_input": none, "compute_infer": d.to_json(), "compute_output": none}
        for size, d in sorted(stats.batches.items())
    ]
    model = {
        "name": name,
        "version": version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": per_request,
        "batch_stats": batches,
    }
    return {"model_stats": [model]}
