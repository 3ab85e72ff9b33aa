"""A run's artifacts on aicloud's API: the files logged to it (through the MLflow tracking API,
docs/mlflow.md). Each is a blob the run holds; ``GET /blobs/{digest}`` reads it."""

from __future__ import annotations

from fastapi import APIRouter, Query

from aicloud.schemas.tracking import RunArtifactOut
from aicloud.server.deps import State, Viewer
from aicloud.server.services.mlflow_artifacts import check_path
from aicloud.server.services.names import check_id

router = APIRouter(tags=["runs"])


@router.get("/runs/{run_id}/artifacts", response_model=list[RunArtifactOut])
def runs_artifacts(
    run_id: str,
    principal: Viewer,
    state: State,
    path: str = Query(default="", max_length=1024, description="only the files at or below this path"),
) -> list[RunArtifactOut]:
    """The run's files by path (every one, or those at or below ``path``)."""
    prefix = check_path(path.strip("/"), folder=True)
    found = state.store.tracking.artifacts(principal.workspace.id, check_id(run_id, "run_id"), prefix)
    return [RunArtifactOut.model_validate(a) for a in found]
