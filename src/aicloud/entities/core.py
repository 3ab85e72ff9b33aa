"""Domain entities of the foundation: workspaces, tokens, datasets, secrets."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Role(enum.StrEnum):
    """Token roles, ordered by power: a viewer reads, a member writes, an admin manages tokens."""

    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "member": 1, "admin": 2}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class VersionStatus(enum.StrEnum):
    READY = "ready"


class BlobOwner(enum.StrEnum):
    """What holds a reference to a stored blob (a row of ``blob_refs``, with the owner's id).

    A blob is removed only when no reference of any kind, in any workspace, is left; a
    workspace may read a blob by digest only while it holds a reference to it.
    """

    UPLOAD = "upload"  # POST /blobs (owner id ""): kept for good
    DATASET_VERSION = "dataset_version"
    MODEL_VERSION = "model_version"  # one per file of the version
    JOB_CODE = "job_code"  # a command job's spec.code
    JOB_LOG = "job_log"
    JOB_CHECKPOINT = "job_checkpoint"  # every checkpoint a job stored
    DEPLOYMENT = "deployment"  # a service deployment's spec.service.code
    RUN_ARTIFACT = "run_artifact"  # a file logged to a run (MLflow artifacts; owner id: the run's)


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    created_at: datetime


#: The model zoo's system workspace (docs/zoo.md): it holds the pulled zoo entries as model versions
#: that every workspace reads (``zoo/<entry>``) and none writes. Its name is one no API call can
#: give a workspace (names start with a letter or digit) and no token belongs to it.
ZOO_WORKSPACE_ID = "ws_zoo00000000000000000"
ZOO_WORKSPACE_NAME = "_zoo"
#: A model reference into the zoo: ``zoo/<entry>`` or ``zoo/<entry>:<version>``
ZOO_REF_PREFIX = "zoo/"


@dataclass(frozen=True)
class Token:
    """A bearer token. Only ``secret_hash`` is stored; the secret is shown once at creation."""

    id: str
    workspace_id: str
    name: str
    role: Role
    secret_hash: str
    created_at: datetime
    scope: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class DatasetVersion:
    """An immutable version of a dataset: one stored file plus what the server learnt from it."""

    id: str
    workspace_id: str
    name: str
    version: int
    format: str
    filename: str
    blob_digest: str
    size_bytes: int
    num_rows: int
    schema: list[dict[str, Any]]
    stats: dict[str, dict[str, Any]]
    created_at: datetime
    lineage: dict[str, Any] = field(default_factory=dict)
    status: VersionStatus = VersionStatus.READY

    @property
    def sha256(self) -> str:
        return self.blob_digest


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    latest_version: int
    num_versions: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Secret:
    id: str
    workspace_id: str
    name: str
    created_at: datetime
    ciphertext: bytes = field(default=b"", repr=False)
