"""Request and response bodies of ``/api/v1``. The client parses responses with these too."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from aicloud.entities import Role

#: Names of workspaces, datasets, secrets, tokens: a letter or digit first, then letters,
#: digits, ``-``, ``_`` or ``.``; never ``..``; at most 100 characters.
NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z"
_NAME_RE = re.compile(NAME_PATTERN)


def _check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            "use letters, digits, '-', '_' or '.', starting with a letter or digit, "
            "at most 100 characters, no '..'"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]

MAX_JSON_DEPTH = 64
"""How deep a free-form JSON field of a request (a job spec, run params, a model's config) may nest."""


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep lists and dicts nest in ``value``, counted up to ``limit + 1`` (iteratively: a value
    nested past Python's recursion limit is measured, not a RecursionError)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_depth(value: dict[str, Any]) -> dict[str, Any]:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


JSONObject = Annotated[dict[str, Any], AfterValidator(_check_depth)]
"""A free-form JSON object of a request, nested at most :data:`MAX_JSON_DEPTH` levels (deeper ones
would exhaust the stack where the server walks or stores it: a 500)."""
SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,99}$")]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class HealthOut(BaseModel):
    status: str
    version: str


class WorkspaceOut(_Out):
    id: str
    name: str
    created_at: datetime


class WorkspaceCreate(BaseModel):
    name: Name


class TokenCreate(BaseModel):
    name: Name
    role: Role = Role.MEMBER
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    #: "metrics": a scrape token, good only for /metrics and Prometheus discovery (docs/metrics.md)
    scope: Literal["metrics"] | None = None


class TokenOut(_Out):
    id: str
    name: str
    role: Role
    scope: str | None = None
    created_at: datetime
    expires_at: datetime | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer token. Shown once; only its hash is stored.")


class WorkspaceCreated(BaseModel):
    workspace: WorkspaceOut
    admin_token: TokenCreated


class WhoAmIOut(BaseModel):
    workspace: WorkspaceOut
    token_id: str
    token_name: str
    role: Role


class DatasetVersionOut(_Out):
    id: str
    name: str
    version: int
    format: str
    filename: str
    sha256: str
    size_bytes: int
    num_rows: int
    schema_: list[dict[str, Any]] = Field(alias="schema")
    stats: dict[str, dict[str, Any]]
    lineage: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime

    model_config = ConfigDict(from_attributes=True, populate_by_name=True, serialize_by_alias=True)


class DatasetSummaryOut(_Out):
    name: str
    latest_version: int
    num_versions: int
    created_at: datetime
    updated_at: datetime


class SplitRequest(BaseModel):
    train_size: float = Field(default=0.8, gt=0.0, lt=1.0)
    seed: int = 0
    stratify: str | None = None


class SplitResponse(BaseModel):
    train: DatasetVersionOut
    test: DatasetVersionOut


class SecretCreate(BaseModel):
    name: SecretName
    value: str = Field(min_length=1, max_length=65536, repr=False)


class SecretOut(_Out):
    name: str
    created_at: datetime


class RotateKeyOut(BaseModel):
    blobs_rewrapped: int
    secrets_rewrapped: int


class ResourceLimits(BaseModel):
    """Limits on a workload (a job's worker, a replica), enforced by its sandbox as rlimits."""

    model_config = ConfigDict(extra="forbid")

    memory_mb: int | None = Field(
        default=None, ge=64, le=16 * 1024 * 1024, description="Address space per process, MiB; none: no cap."
    )
    cpu_seconds: int | None = Field(
        default=None, ge=1, description="CPU time per process, seconds (SIGXCPU, then SIGKILL); none: no cap."
    )
    processes: int = Field(default=4096, ge=16, le=1_000_000, description="Processes and threads, at most.")
    open_files: int = Field(
        default=65536, ge=64, le=1_048_576, description="Open files per process, at most."
    )
