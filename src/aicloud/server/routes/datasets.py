"""Datasets: streamed uploads that become immutable versions, downloads, splits.

The upload is streamed into the blob store here; profiling it into a version, splits and deletes
are :mod:`aicloud.server.services.datasets`."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aicloud.schemas import DatasetSummaryOut, DatasetVersionOut, SplitRequest, SplitResponse
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._paging import DEFAULT_LIMIT, MAX_LIMIT, Limit, Offset, set_total
from aicloud.server.routes._streaming import blob_response
from aicloud.server.routes._uploads import receive_upload
from aicloud.server.services.datasets import delete_dataset, ingest_upload, split_version
from aicloud.server.services.names import check_name, parse_version

router = APIRouter(tags=["datasets"])


@router.post("/datasets/{name}/versions", response_model=DatasetVersionOut, status_code=201)
async def datasets_upload(
    name: str,
    request: Request,
    response: Response,
    principal: Member,
    state: State,
    format: str | None = Query(default=None, description="csv, parquet, npz or jsonl; default from the name"),
    filename: str = Query(default="upload", description="file name of a raw (non-multipart) body"),
) -> DatasetVersionOut:
    """Upload a file as the next version of dataset ``name``: multipart (part ``file``) or a raw body."""
    check_name(name)
    t0 = time.perf_counter()
    upload = await receive_upload(request, state.blobs, state.settings.max_upload_bytes, filename)
    t1 = time.perf_counter()
    declared = format or upload.fields.get("format") or None
    from aicloud.server.services.evaluation_specs import job_output_lineage  # a batch_predict job's output

    lineage = await run_in_threadpool(job_output_lineage, state, principal)
    version = await run_in_threadpool(
        ingest_upload, state, principal.workspace.id, name, upload.blob, upload.filename, declared, lineage
    )
    t2 = time.perf_counter()
    # Where the time went, for clients and benchmarks (browsers show it in their dev tools).
    response.headers["Server-Timing"] = (
        f"store;dur={(t1 - t0) * 1000:.1f}, profile;dur={(t2 - t1) * 1000:.1f}"
    )
    return DatasetVersionOut.model_validate(version)


@router.get("/datasets", response_model=list[DatasetSummaryOut])
def datasets_list(
    principal: Viewer, state: State, response: Response, offset: Offset = 0, limit: Limit = DEFAULT_LIMIT
) -> list[DatasetSummaryOut]:
    """Datasets, newest first, ``limit`` after ``offset``; ``X-Total-Count`` says how many in all."""
    ws = principal.workspace.id
    set_total(response, state.store.datasets.count_datasets(ws))
    return [
        DatasetSummaryOut.model_validate(d)
        for d in state.store.datasets.list_datasets(ws, offset=offset, limit=limit)
    ]


@router.get("/datasets/{name}/versions", response_model=list[DatasetVersionOut])
def datasets_list_versions(
    name: str,
    principal: Viewer,
    state: State,
    response: Response,
    offset: Offset = 0,
    limit: Limit = MAX_LIMIT,
    newest_first: bool = False,
) -> list[DatasetVersionOut]:
    """A dataset's versions, oldest first (newest first with ``newest_first``), ``limit`` after
    ``offset``; ``X-Total-Count`` says how many versions it has."""
    ws, name = principal.workspace.id, check_name(name)
    set_total(response, state.store.datasets.count_versions(ws, name))
    versions = state.store.datasets.list_versions(
        ws, name, offset=offset, limit=limit, newest_first=newest_first
    )
    return [DatasetVersionOut.model_validate(v) for v in versions]


@router.get("/datasets/{name}/versions/{version}", response_model=DatasetVersionOut)
async def datasets_get_version(name: str, version: str, principal: Viewer, state: State) -> DatasetVersionOut:
    """One version (``latest`` or a number). Numbered versions are immutable and served from memory."""
    number = parse_version(version)
    key = (principal.workspace.id, check_name(name), number or 0)
    cached = state.versions.get(key) if number else None
    if cached is not None:
        return cached
    row = await run_in_threadpool(state.store.datasets.get_version, principal.workspace.id, name, number)
    out = DatasetVersionOut.model_validate(row)
    state.versions.put((principal.workspace.id, name, row.version), out)
    return out


@router.get("/datasets/{name}/versions/{version}/content", response_class=StreamingResponse)
def datasets_download(name: str, version: str, principal: Viewer, state: State) -> StreamingResponse:
    """The stored file, byte-identical to the upload, streamed and decrypted on the fly."""
    row = state.store.datasets.get_version(principal.workspace.id, check_name(name), parse_version(version))
    return blob_response(state.blobs, row.blob_digest, row.size_bytes, row.filename)


@router.post("/datasets/{name}/versions/{version}/split", response_model=SplitResponse, status_code=201)
def datasets_split(
    name: str, version: str, body: SplitRequest, principal: Member, state: State
) -> SplitResponse:
    """Split a version into ``<name>-train`` and ``<name>-test`` versions, deterministic for a seed."""
    parent = state.store.datasets.get_version(
        principal.workspace.id, check_name(name), parse_version(version)
    )
    parts = split_version(state, principal.workspace.id, parent, body)
    return SplitResponse(
        train=DatasetVersionOut.model_validate(parts["train"]),
        test=DatasetVersionOut.model_validate(parts["test"]),
    )


@router.delete("/datasets/{name}", status_code=204)
def datasets_delete(name: str, principal: Member, state: State) -> Response:
    """Delete a dataset with all its versions; a stored file is removed only when no reference of
    any kind (dataset or model version, job, upload), in any workspace, holds it any more."""
    delete_dataset(state, principal.workspace.id, check_name(name))
    return Response(status_code=204)
