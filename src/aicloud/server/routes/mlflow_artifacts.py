"""MLflow tracking API: run artifacts through MLflow's artifact proxy
(``/mlflow/api/2.0/mlflow-artifacts/artifacts/<experiment>/<run>/artifacts/<path>``) and the
tracking service's list (``/mlflow/api/2.0/mlflow/artifacts/list``); docs/mlflow.md.

A file is streamed into an encrypted blob (nothing is written in plaintext), then recorded as
the run's (``run_artifacts``) with a blob reference owned by the run, in one transaction.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._mlflow import mlflow_router
from aicloud.server.routes._streaming import blob_response
from aicloud.server.routes._uploads import receive_upload
from aicloud.server.services import mlflow_artifacts as artifacts

router = mlflow_router()
PROXY = "/api/2.0/mlflow-artifacts/artifacts"


@router.get(PROXY)
def mlflow_artifacts_list(request: Request, principal: Viewer, state: State) -> dict[str, Any]:
    """The files and folders directly in ``?path=<experiment>/<run>/artifacts[/<folder>]``."""
    located = artifacts.locate(request.query_params.get("path") or "", folder=True)
    return {"files": artifacts.listing(state, principal, located)}


@router.get(PROXY + "/{path:path}", response_class=StreamingResponse)
def mlflow_artifacts_download(path: str, principal: Viewer, state: State) -> StreamingResponse:
    found = artifacts.find(state, principal, artifacts.locate(path))
    return blob_response(state.blobs, found.digest, found.size)


@router.put(PROXY + "/{path:path}")
async def mlflow_artifacts_upload(
    path: str, request: Request, principal: Member, state: State
) -> dict[str, Any]:
    """Store the body as the run's file at ``path`` (replacing one there)."""
    located = artifacts.locate(path)
    await run_in_threadpool(artifacts.writable, state, principal, located)
    upload = await receive_upload(request, state.blobs, state.settings.max_upload_bytes)
    await run_in_threadpool(artifacts.record, state, principal, located, upload.blob.digest, upload.blob.size)
    return {}


@router.delete(PROXY + "/{path:path}")
def mlflow_artifacts_delete(path: str, principal: Member, state: State) -> dict[str, Any]:
    artifacts.delete(state, principal, artifacts.locate(path, folder=True))
    return {}


@router.get("/api/2.0/mlflow/artifacts/list")
def mlflow_artifacts_list_run(request: Request, principal: Viewer, state: State) -> dict[str, Any]:
    """MLflow's tracking-service listing: ``?run_id=&path=``, paths relative to the run's root."""
    query = request.query_params
    run_id = query.get("run_id") or query.get("run_uuid") or ""
    folder = (query.get("path") or "").strip("/")
    located = artifacts.locate(f"0/{run_id}/artifacts/{folder}".rstrip("/"), folder=True)
    files = artifacts.listing(state, principal, located)
    for entry in files:
        entry["path"] = f"{folder}/{entry['path']}" if folder else entry["path"]
    run = artifacts.find_run(state, principal, located)
    root = f"mlflow-artifacts:/{artifacts.experiment_of(state, principal, run)}/{run.id}/artifacts"
    return {"root_uri": root, "files": files}
