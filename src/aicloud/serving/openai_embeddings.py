"""OpenAI's embeddings API on a replica serving a text-embedding version (docs/openai.md).

    POST /v1/embeddings   {"model": "...", "input": "text" | ["text", ...],
                           "encoding_format": "float" | "base64", "dimensions": N}
    GET  /v1/models       this deployment, as OpenAI lists a model

* ``input``: a string or a list of at most :data:`~aicloud.serving.text_runtime.MAX_INPUTS`
  strings (a longer list: 413, send it in batches); an empty string, an empty list, a token-id
  array or any other type: 400 naming the item (``param`` ``input``).
* A text longer than the model's ``max_length`` tokens is truncated (OpenAI refuses it instead);
  ``usage.prompt_tokens`` counts the tokens the model saw, special tokens included.
* ``encoding_format``: ``float`` (the default of the API; lists of numbers) or ``base64`` (what the
  official Python client asks for: little-endian float32 bytes, base64).
* ``dimensions``: 1 to the model's D; the first ``dimensions`` numbers of the vector, L2-normalized
  again (Matryoshka-style truncation: meaningful for models trained for it, otherwise a lossy
  projection); more than D is a 400.
* ``model`` is echoed back as sent (the deployment's name when absent): a replica serves one model.

The texts go through the replica's dynamic batcher with ``/predict``'s: requests of any length are
batched together, exactly. Errors have OpenAI's shape (:mod:`aicloud.wire.openai`).
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from aicloud.errors import AicloudError, BadRequestError, NotFoundError
from aicloud.serving.asgi import JSON, ClientGone, request_body, submit
from aicloud.serving.batcher import QueueFullError
from aicloud.serving.runtime import parse_json
from aicloud.serving.text_runtime import TextResult, TextRuntime, check_texts
from aicloud.wire.openai import error_body, param_of

if TYPE_CHECKING:
    from aicloud.serving.app import ReplicaApp

CREATED = int(time.time())


def openai_error(exc: AicloudError, param: str | None = None) -> Response:
    """An aicloud error answered in OpenAI's shape (``Retry-After`` on a full queue)."""
    headers = {}
    if isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    body = error_body(exc.status_code, exc.message, param=param or param_of(exc.details))
    return Response(body, status_code=exc.status_code, media_type=JSON, headers=headers)


def _bad(param: str, message: str) -> BadRequestError:
    return BadRequestError(message, details=[{"field": param, "message": message}])


def embeddings_request(doc: Any, dimensions: int) -> tuple[list[str], str | None, bool, int | None]:
    """(texts, model, base64?, dimensions) of a ``/v1/embeddings`` body, or a 400/413."""
    if not isinstance(doc, dict):
        raise _bad("body", "expected a JSON object {'model': ..., 'input': ...}")
    if "input" not in doc:
        raise _bad("input", "'input' is required: a string or a list of strings")
    raw = doc["input"]
    single = isinstance(raw, str)
    if isinstance(raw, list) and raw and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise _bad("input", "token-id arrays are not supported: send the text")
    try:
        texts = check_texts([raw] if single else raw, "input")
    except AicloudError as exc:
        exc.details = [{"field": "input", "message": exc.message}]
        raise
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "'model' must be a string")
    fmt = doc.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise _bad("encoding_format", f"encoding_format must be 'float' or 'base64', got {fmt!r}")
    dims = doc.get("dimensions")
    if dims is not None and (
        not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= dimensions
    ):
        raise _bad(
            "dimensions", f"dimensions must be an integer from 1 to this model's {dimensions}, got {dims!r}"
        )
    return texts, model, fmt == "base64", dims


def embeddings_payload(result: TextResult, model: str, as_base64: bool, dims: int | None) -> dict[str, Any]:
    """The ``/v1/embeddings`` answer for the model's vectors."""
    vectors = result.values
    if dims is not None and dims < vectors.shape[1]:
        vectors = vectors[:, :dims].astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    data = []
    for i, row in enumerate(vectors):
        value: Any = (
            base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode()
            if as_base64
            else row.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = int(sum(result.tokens))
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models_payload(name: str) -> dict[str, Any]:
    """``GET /v1/models``: this deployment."""
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": CREATED, "owned_by": "aicloud"}],
    }


def add_openai_embedding_routes(api: FastAPI, app: ReplicaApp) -> None:
    """``POST /v1/embeddings`` and ``GET /v1/models`` when the replica serves a text-embedding model."""
    runtime = app.runtime
    if not isinstance(runtime, TextRuntime):
        return

    @api.get("/v1/models")
    async def models() -> Response:
        if runtime.task != "text-embedding":
            return openai_error(
                NotFoundError(f"this deployment serves a {runtime.task} model, not an OpenAI model")
            )
        return Response(json.dumps(models_payload(app.config.name)), media_type=JSON)

    @api.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        batcher = app.batcher
        assert batcher is not None
        try:
            if runtime.task != "text-embedding":
                raise _bad(
                    "model", f"this deployment serves a {runtime.task} model, not embeddings: use /predict"
                )
            doc = parse_json(request_body(request))
            texts, model, as_base64, dims = embeddings_request(doc, int(runtime.dimensions or 0))
            result = await submit(request.receive, batcher, runtime.prepare(texts), len(texts))
        except ClientGone:
            raise
        except AicloudError as exc:
            return openai_error(exc)
        payload = embeddings_payload(result, model or app.config.name, as_base64, dims)
        return Response(json.dumps(payload, separators=(",", ":")), media_type=JSON)
