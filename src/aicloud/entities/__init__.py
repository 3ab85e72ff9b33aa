"""Plain domain types returned by the stores; no ORM rows, no wire concerns."""

from aicloud.entities.core import (
    BlobOwner,
    DatasetSummary,
    DatasetVersion,
    Role,
    Secret,
    Token,
    VersionStatus,
    Workspace,
)
from aicloud.entities.jobs import (
    Job,
    JobKind,
    JobStatus,
    MetricPoint,
    Model,
    ModelVersion,
    Run,
    RunStatus,
)
from aicloud.entities.tracking import Experiment, RunArtifact

__all__ = [
    "BlobOwner",
    "DatasetSummary",
    "DatasetVersion",
    "Experiment",
    "Job",
    "JobKind",
    "JobStatus",
    "MetricPoint",
    "Model",
    "ModelVersion",
    "Role",
    "Run",
    "RunArtifact",
    "RunStatus",
    "Secret",
    "Token",
    "VersionStatus",
    "Workspace",
]
