"""Wire bodies of experiment tracking on aicloud's own API (the MLflow protocol's are MLflow's)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class RunArtifactOut(BaseModel):
    """A file logged to a run (``mlflow.log_artifact``): its path under the run's artifact root,
    its size, and the blob that holds it (``GET /blobs/{digest}`` reads it)."""

    model_config = ConfigDict(from_attributes=True)

    path: str
    size: int
    digest: str
    created_at: datetime
