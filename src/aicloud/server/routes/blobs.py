"""Raw blobs: model artifacts, code archives. A workspace reads a blob by digest only while it
holds a reference to it (it uploaded it, or a dataset version, model, job or deployment of the
workspace keeps it): to any other workspace the blob does not exist."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aicloud.blobs.base import check_digest
from aicloud.errors import NotFoundError
from aicloud.schemas.jobs import BlobOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._streaming import blob_response
from aicloud.server.routes._uploads import receive_upload

router = APIRouter(tags=["blobs"])


@router.post("/blobs", response_model=BlobOut, status_code=201)
async def blobs_upload(request: Request, principal: Member, state: State) -> BlobOut:
    """Store the request body (raw or multipart part ``file``) and return its sha256."""
    upload = await receive_upload(request, state.blobs, state.settings.max_upload_bytes)
    workspace_id, digest = principal.workspace.id, upload.blob.digest
    await run_in_threadpool(state.keep_blob, digest, lambda: state.store.blob_refs.add(workspace_id, digest))
    return BlobOut(digest=upload.blob.digest, size=upload.blob.size)


@router.get("/blobs/{digest}", response_class=StreamingResponse)
def blobs_download(digest: str, principal: Viewer, state: State) -> StreamingResponse:
    check_digest(digest)
    if not state.store.blob_refs.owns(principal.workspace.id, digest):
        raise NotFoundError(f"blob {digest} does not exist", details={"kind": "blob"})
    return blob_response(state.blobs, digest, state.blobs.size(digest))
