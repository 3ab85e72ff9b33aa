"""The aicloud error tree: one root, coded subclasses, and the code → HTTP status table.

Every error carries a stable ``code``, a human ``message`` built from its fields, and
optional structured ``details``. The server renders it as::

    {"error": {"code": "...", "message": "...", "details": ...}}

and the SDK raises the same class again from that JSON (see :func:`error_from_payload`).

    AicloudError                      500 internal
    ├── BadRequestError               400 bad_request
    │   ├── InvalidDataError          400 invalid_data      (a malformed or empty upload)
    │   └── UnsupportedFormatError    400 unsupported_format
    ├── UnauthenticatedError          401 unauthenticated
    ├── PermissionDeniedError         403 permission_denied
    ├── NotFoundError                 404 not_found
    ├── ConflictError                 409 conflict
    ├── PayloadTooLargeError          413 payload_too_large
    ├── ValidationError               422 validation_error  (a field of a request is wrong)
    ├── UnavailableError              503 unavailable
    ├── DataCorruptedError            500 data_corrupted    (a stored object failed authentication)
    └── StoreSchemaError              500 store_schema      (the database needs a migration)
"""

from __future__ import annotations

from typing import Any, ClassVar


class AicloudError(Exception):
    """Root of every error aicloud raises on purpose."""

    code: ClassVar[str] = "internal"
    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_payload(self) -> dict[str, Any]:
        """The wire form of this error."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequestError(AicloudError):
    code = "bad_request"
    status_code = 400


class InvalidDataError(BadRequestError):
    """An uploaded file could not be read as the format it claims to be."""

    code = "invalid_data"


class UnsupportedFormatError(BadRequestError):
    code = "unsupported_format"


class UnauthenticatedError(AicloudError):
    code = "unauthenticated"
    status_code = 401


class PermissionDeniedError(AicloudError):
    code = "permission_denied"
    status_code = 403


class NotFoundError(AicloudError):
    code = "not_found"
    status_code = 404

    @classmethod
    def of(cls, kind: str, name: str) -> NotFoundError:
        return cls(f"{kind} {name!r} does not exist", details={"kind": kind, "name": name})


class ConflictError(AicloudError):
    code = "conflict"
    status_code = 409


class PayloadTooLargeError(AicloudError):
    code = "payload_too_large"
    status_code = 413


class ValidationError(AicloudError):
    """A field of a request is invalid; ``details`` names the field."""

    code = "validation_error"
    status_code = 422

    @classmethod
    def field(cls, field: str, problem: str) -> ValidationError:
        return cls(f"{field}: {problem}", details=[{"field": field, "message": problem}])


class UnavailableError(AicloudError):
    code = "unavailable"
    status_code = 503


class DataCorruptedError(AicloudError):
    """A stored object failed its integrity check: it was altered on disk."""

    code = "data_corrupted"
    status_code = 500


class StoreSchemaError(AicloudError):
    code = "store_schema"
    status_code = 500


#: The code of an HTTP error that no AicloudError raised (a framework's 404, 405, 413...).
HTTP_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "unavailable",
}


def code_for_status(status: int) -> str:
    """The error ``code`` for an HTTP ``status`` (:data:`HTTP_STATUS_CODES`; else ``bad_request``
    for a 4xx and ``internal`` for the rest)."""
    return HTTP_STATUS_CODES.get(status, "bad_request" if 400 <= status < 500 else "internal")


def _all_subclasses(cls: type[AicloudError]) -> list[type[AicloudError]]:
    out: list[type[AicloudError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


ERRORS_BY_CODE: dict[str, type[AicloudError]] = {c.code: c for c in _all_subclasses(AicloudError)}
STATUS_BY_CODE: dict[str, int] = {c.code: c.status_code for c in _all_subclasses(AicloudError)}


def error_from_payload(status_code: int, payload: Any) -> AicloudError:
    """Rebuild the typed error a server sent; unknown codes fall back on the HTTP status."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        cls = next((c for c in ERRORS_BY_CODE.values() if c.status_code == status_code), AicloudError)
        return cls(f"HTTP {status_code}: {str(payload)[:500]}")
    code = str(err.get("code", "internal"))
    found = ERRORS_BY_CODE.get(code)
    if found is None:
        found = next((c for c in ERRORS_BY_CODE.values() if c.status_code == status_code), AicloudError)
    return found(str(err.get("message", "")), details=err.get("details"))
