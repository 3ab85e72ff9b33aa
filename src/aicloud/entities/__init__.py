"""Plain domain types returned by the stores; no ORM rows, no wire concerns."""

from aicloud.entities.core import (
    DatasetSummary,
    DatasetVersion,
    Role,
    Secret,
    Token,
    VersionStatus,
    Workspace,
)

__all__ = ["DatasetSummary", "DatasetVersion", "Role", "Secret", "Token", "VersionStatus", "Workspace"]
