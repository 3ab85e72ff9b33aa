"""OpenAI's error shape, shared by the gateway's ``/openai/v1`` routes and the replicas' OpenAI routes.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input", "code": null}}

The official clients raise their exception type from the HTTP status (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 413/422 APIStatusError, 429
RateLimitError, 5xx InternalServerError) and show ``message``; ``type`` follows OpenAI's names.
"""

from __future__ import annotations

import json
from typing import Any

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {401: "invalid_api_key", 404: "model_not_found", 413: "request_too_large"}


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an HTTP status."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_payload(
    status: int, message: str, *, param: str | None = None, code: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` for ``status``."""
    return {
        "error": {
            "message": message,
            "type": kind or error_type(status),
            "param": param,
            "code": code if code is not None else _CODES.get(status),
        }
    }


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    """:func:`error_payload` as JSON bytes."""
    return json.dumps(error_payload(status, message, param=param, code=code)).encode()


def param_of(details: Any) -> str | None:
    """The field an aicloud error's ``details`` names (``[{"field": ...}]``), for OpenAI's ``param``."""
    if isinstance(details, list) and details and isinstance(details[0], dict):
        field = details[0].get("field")
        return str(field) if field is not None else None
    return None
