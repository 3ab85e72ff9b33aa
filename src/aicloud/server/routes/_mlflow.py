"""What the MLflow tracking API's routes share (``docs/mlflow.md``): errors in MLflow's shape,
JSON bodies and query fields read MLflow's way, the model registry's refusal, and the fallback
for routes aicloud does not serve.

The routes live under ``/mlflow`` (the tracking URI is ``http://HOST:PORT/mlflow``) and are left
out of aicloud's OpenAPI document: they are MLflow's protocol, not aicloud's API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from aicloud.errors import AicloudError, BadRequestError, PayloadTooLargeError
from aicloud.server.deps import Viewer
from aicloud.server.services.mlflow import MlflowError, error_response, registry_refused

log = logging.getLogger("aicloud.server.mlflow")

PREFIX = "/mlflow"
MAX_JSON_BYTES = 16 * 1024 * 1024


def _mlflow_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


class MlflowRoute(APIRoute):
    """A route whose every error, its auth's and its validation's included, leaves in MLflow's
    shape ``{"error_code", "message"}`` instead of aicloud's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except AicloudError as exc:
                status, body = error_response(exc)
                if status >= 500:
                    log.error("%s: %s", body["error_code"], body["message"])
                return JSONResponse(body, status_code=status)
            except RequestValidationError as exc:
                fields = "; ".join(
                    ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
                    + f": {e.get('msg', '')}"
                    for e in exc.errors()
                )
                return _mlflow_error(400, "INVALID_PARAMETER_VALUE", fields or "invalid request")
            except StarletteHTTPException as exc:
                status, body = error_response(AicloudError(str(exc.detail)))
                return _mlflow_error(exc.status_code, "BAD_REQUEST", body["message"])

        return route


def mlflow_router() -> APIRouter:
    return APIRouter(route_class=MlflowRoute, include_in_schema=False, tags=["mlflow"])


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_JSON_BYTES:
        raise PayloadTooLargeError(f"the request body is larger than {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequestError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequestError("the request body must be a JSON object")
    return data


Body = Annotated[dict[str, Any], Depends(json_body)]


def text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise BadRequestError(f"{key} must be a string")
    return str(value)


def items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadRequestError(f"{key} must be a list of objects")
    return value


def strings(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequestError(f"{key} must be a list of strings")
    return value


def integer(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequestError(f"{key} must be an integer") from None


# --- the model registry, and routes aicloud does not serve ------------------------------------

fallback = mlflow_router()
_ALL = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@fallback.api_route("/api/2.0/mlflow/registered-models/{rest:path}", methods=_ALL)
@fallback.api_route("/api/2.0/mlflow/model-versions/{rest:path}", methods=_ALL)
@fallback.api_route("/api/2.0/mlflow/logged-models{rest:path}", methods=_ALL)
@fallback.api_route("/api/2.0/mlflow/runs/log-model", methods=_ALL)
def mlflow_registry(principal: Viewer) -> None:
    """MLflow's model registry (and logged models): aicloud's registry is its own."""
    raise registry_refused()


@fallback.api_route("/{rest:path}", methods=_ALL)
def mlflow_unknown(request: Request, principal: Viewer) -> None:
    raise MlflowError(
        "ENDPOINT_NOT_FOUND",
        f"aicloud's MLflow tracking API does not serve {request.method} {request.url.path}; "
        "docs/mlflow.md lists what it serves",
        status=404,
    )
