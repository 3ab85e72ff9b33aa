"""The replica's Open Inference Protocol (v2) routes: health, metadata, readiness, infer and the
model configuration and statistics extensions (:mod:`aicloud.serving.oip_extensions`).

    GET  /v2/health/live, /v2/health/ready
    GET  /v2                                             server metadata (and its extensions)
    GET  /v2/models/{model}[/versions/{version}]         model metadata (tensors once ready)
    GET  /v2/models/{model}[/versions/{version}]/ready
    GET  /v2/models/{model}[/versions/{version}]/config  Triton's model configuration
    GET  /v2/models[/{model}[/versions/{version}]]/stats inference statistics
    POST /v2/models/{model}[/versions/{version}]/infer   JSON or binary tensor data

Errors on these routes are the protocol's ``{"error": "<message>"}`` (the replica app renders any
error under ``/v2`` so), with aicloud's status and message.

``infer`` serves a model runtime only: its tensors go through the same batcher as ``/predict``. A
single numeric input is taken as a ``[-1, width]`` matrix; otherwise each input is one column. A model
with tensor inputs (your own ``nn.Module``) takes one tensor per input, shaped ``[-1, *shape]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from aicloud.errors import BadRequestError, NotFoundError, UnavailableError
from aicloud.serving.asgi import JSON, error_response, request_body, submit
from aicloud.serving.oip import DTYPES, HEADER, InferRequest, encode_infer_response, parse_infer_request
from aicloud.serving.oip_extensions import EXTENSIONS, model_config, model_statistics
from aicloud.serving.runtime import ModelRuntime, Prepared, bad_input

if TYPE_CHECKING:
    from aicloud.serving.app import ReplicaApp


def add_oip_routes(api: FastAPI, app: ReplicaApp) -> None:
    """Add the OIP v2 routes of ``app`` (the model it serves is ``app.config.name``) to ``api``."""
    name = app.config.name

    @api.get("/v2/health/live", include_in_schema=True)
    async def live() -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    @api.get("/v2/health/ready")
    async def ready() -> Response:
        if app.state.ready and not app.state.draining:
            return Response(b'{"ready":true}', media_type=JSON)
        return error_response(UnavailableError(f"not ready: {app.state.message}"), oip=True)

    @api.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        from aicloud import __version__

        return {"name": "aicloud", "version": __version__, "extensions": list(EXTENSIONS)}

    def check_model(model: str, version: str | None = None) -> None:
        if model != name:
            raise NotFoundError(
                f"model {model!r} does not exist; this endpoint serves model {name!r}",
                details={"kind": "model", "name": model},
            )
        if version is not None and version != app.config.version:
            raise NotFoundError(
                f"model {model!r} has no version {version!r} here; this endpoint serves version "
                f"{app.config.version!r} (or leave the version out)",
                details={"kind": "model_version", "name": f"{model}:{version}"},
            )

    def model_metadata() -> dict[str, Any]:
        doc: dict[str, Any] = {"name": name, "versions": [app.config.version], "platform": "aicloud"}
        if app.runtime is not None and app.state.ready:
            doc["inputs"] = [t.to_json() for t in app.runtime.inputs]
            doc["outputs"] = [t.to_json() for t in app.runtime.outputs]
        else:
            doc["inputs"], doc["outputs"] = [], []
        return doc

    def config() -> dict[str, Any]:
        runtime, loaded = app.runtime, app.runtime is not None and app.state.ready
        return model_config(
            name,
            app.config.version,
            backend=str(getattr(runtime, "engine", "") or "aicloud") if runtime else "service",
            inputs=runtime.inputs if runtime and loaded else [],
            outputs=runtime.outputs if runtime and loaded else [],
            max_batch_size=app.config.max_batch_size if runtime else 0,
            max_wait_ms=app.config.max_wait_ms,
            max_queue=app.config.max_queue,
        )

    def stats() -> dict[str, Any]:
        return model_statistics(name, app.config.version, app.metrics.inference)

    # before /v2/models/{model}, which would take "stats" for a model name
    @api.get("/v2/models/stats")
    async def all_stats() -> dict[str, Any]:
        return stats()

    @api.get("/v2/models/{model}/stats")
    async def model_stats(model: str) -> dict[str, Any]:
        check_model(model)
        return stats()

    @api.get("/v2/models/{model}/versions/{version}/stats")
    async def model_stats_version(model: str, version: str) -> dict[str, Any]:
        check_model(model, version)
        return stats()

    @api.get("/v2/models/{model}/config")
    async def model_config_route(model: str) -> dict[str, Any]:
        check_model(model)
        return config()

    @api.get("/v2/models/{model}/versions/{version}/config")
    async def model_config_version(model: str, version: str) -> dict[str, Any]:
        check_model(model, version)
        return config()

    @api.get("/v2/models/{model}")
    async def model_meta(model: str) -> dict[str, Any]:
        check_model(model)
        return model_metadata()

    @api.get("/v2/models/{model}/versions/{version}")
    async def model_meta_version(model: str, version: str) -> dict[str, Any]:
        check_model(model, version)
        return model_metadata()

    async def model_ready_impl(model: str, version: str | None = None) -> Response:
        check_model(model, version)
        if app.state.ready and not app.state.draining:
            return Response(b'{"ready":true}', media_type=JSON)
        return error_response(UnavailableError(f"not ready: {app.state.message}"), oip=True)

    @api.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> Response:
        return await model_ready_impl(model)

    @api.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready_version(model: str, version: str) -> Response:
        return await model_ready_impl(model, version)

    @api.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        check_model(model)
        return await handle_infer(app, request)

    @api.post("/v2/models/{model}/versions/{version}/infer")
    async def infer_version(model: str, version: str, request: Request) -> Response:
        check_model(model, version)
        return await handle_infer(app, request)


async def handle_infer(app: ReplicaApp, request: Request) -> Response:
    """Answer one OIP infer request on ``app``'s model runtime (JSON or binary tensor data)."""
    runtime, batcher = app.runtime, app.batcher
    if runtime is None or batcher is None:
        raise BadRequestError("this deployment serves a Service: call its handlers, not OIP infer")
    req = parse_infer_request(request_body(request), request.headers.get(HEADER))
    prepared = prepare_tensors(runtime, req)
    outputs = await submit(request.receive, batcher, prepared, prepared.rows)
    spec = runtime.outputs[0]
    if spec.datatype == "BYTES":
        array = np.array([str(v) for v in outputs], dtype=object)
    else:
        array = np.asarray(outputs, dtype=DTYPES[spec.datatype])
    body, header_length = encode_infer_response(
        app.config.name, app.config.version, req, {spec.name: (spec.datatype, array)}
    )
    if header_length is None:
        return Response(body, media_type=JSON)
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


def prepare_tensors(runtime: ModelRuntime, req: InferRequest) -> Prepared:
    """Validate an infer request's tensors against the runtime's inputs (400 naming the tensor)."""
    specs = runtime.inputs
    if getattr(runtime, "tensors", None):  # a model with tensor inputs takes the tensors as they are
        tensors = dict(req.inputs)
        if len(specs) == 1 and len(tensors) == 1:
            tensors = {specs[0].name: next(iter(tensors.values()))}
        return runtime.prepare(tensors, field="inputs")
    if len(specs) == 1 and specs[0].datatype != "BYTES":
        spec = specs[0]
        tensor = req.inputs.get(spec.name)
        if tensor is None and len(req.inputs) == 1:
            tensor = next(iter(req.inputs.values()))
        if tensor is None:
            raise bad_input("inputs", f"expected one tensor named {spec.name!r}")
        width = spec.shape[1]
        if tensor.dtype == object or (
            tensor.dtype == bool and any(c.dtype != "bool" for c in runtime.columns)
        ):
            raise bad_input(f"inputs.{spec.name}", "expected a numeric datatype (FP32, FP64, INT64...)")
        if tensor.ndim != 2 or tensor.shape[1] != width:
            raise bad_input(f"inputs.{spec.name}", f"expected shape [-1, {width}], got {list(tensor.shape)}")
        if tensor.shape[0] == 0:
            raise bad_input(f"inputs.{spec.name}", "empty batch: send at least one row")
        matrix = tensor.astype(np.float64)
        if not np.isfinite(matrix).all():
            r, c = np.argwhere(~np.isfinite(matrix))[0]
            raise bad_input(f"inputs.{spec.name}[{r}][{c}]", "expected a finite number")
        return Prepared(matrix=matrix)
    rows: int | None = None
    columns: dict[str, list[Any]] = {}
    for spec in specs:
        tensor = req.inputs.get(spec.name)
        if tensor is None:
            raise bad_input("inputs", f"missing tensor {spec.name!r}")
        flat = tensor.reshape(-1) if tensor.ndim == 1 or tensor.shape[1:] == (1,) else None
        if flat is None:
            raise bad_input(f"inputs.{spec.name}", f"expected shape [-1], got {list(tensor.shape)}")
        if rows is not None and len(flat) != rows:
            raise bad_input(f"inputs.{spec.name}", f"expected {rows} values like the other inputs")
        rows = len(flat)
        columns[spec.name] = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat.tolist()
        ]
    records = [{k: columns[k][i] for k in columns} for i in range(rows or 0)]
    return runtime.prepare(records, field="inputs")
