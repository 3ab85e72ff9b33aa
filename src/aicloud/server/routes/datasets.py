"""Datasets: streamed uploads that become immutable versions, downloads, splits."""

from __future__ import annotations

import functools
import posixpath
import time

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aicloud import data
from aicloud.auth import Principal
from aicloud.entities import DatasetVersion
from aicloud.errors import AicloudError
from aicloud.schemas import DatasetSummaryOut, DatasetVersionOut, SplitRequest, SplitResponse
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._common import check_name, parse_version
from aicloud.server.state import AppState
from aicloud.server.streaming import blob_response
from aicloud.server.uploads import Upload, receive_upload

router = APIRouter(tags=["datasets"])


def clean_filename(name: str) -> str:
    """Keep only a harmless base name: the file name is metadata, never a path."""
    base = posixpath.basename(name.replace("\\", "/")).strip().lstrip(".")
    return "".join(c for c in base if c.isprintable())[:200] or "upload"


def _discard(state: AppState, digest: str) -> None:
    """Remove a blob stored for an upload that failed, unless any reference holds the same bytes."""
    state.drop_blobs(lambda: [] if state.store.blob_refs.in_use(digest) else [digest])


def _ingest(
    state: AppState, principal: Principal, name: str, upload: Upload, declared: str | None
) -> DatasetVersion:
    digest = upload.blob.digest
    filename = clean_filename(upload.filename)
    try:
        with state.blobs.open(digest) as f:
            fmt = data.detect_format(filename, f.read(512), declared)
            f.seek(0)
            prof = state.parsers.profile(fmt, f, size=upload.blob.size)  # in a worker process
    except AicloudError:
        _discard(state, digest)
        raise
    return state.keep_blob(
        digest,
        lambda: state.store.datasets.create_version(
            workspace_id=principal.workspace.id,
            name=name,
            format=fmt,
            filename=filename,
            blob_digest=digest,
            size_bytes=upload.blob.size,
            num_rows=prof.num_rows,
            schema=prof.schema,
            stats=prof.stats,
            lineage={"source": "upload"},
        ),
    )


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
    version = await run_in_threadpool(_ingest, state, principal, name, upload, declared)
    t2 = time.perf_counter()
    # Where the time went, for clients and benchmarks (browsers show it in their dev tools).
    response.headers["Server-Timing"] = (
        f"store;dur={(t1 - t0) * 1000:.1f}, profile;dur={(t2 - t1) * 1000:.1f}"
    )
    return DatasetVersionOut.model_validate(version)


@router.get("/datasets", response_model=list[DatasetSummaryOut])
def datasets_list(principal: Viewer, state: State) -> list[DatasetSummaryOut]:
    return [
        DatasetSummaryOut.model_validate(d)
        for d in state.store.datasets.list_datasets(principal.workspace.id)
    ]


@router.get("/datasets/{name}/versions", response_model=list[DatasetVersionOut])
def datasets_list_versions(name: str, principal: Viewer, state: State) -> list[DatasetVersionOut]:
    versions = state.store.datasets.list_versions(principal.workspace.id, check_name(name))
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


def _split(
    state: AppState, principal: Principal, parent: DatasetVersion, body: SplitRequest
) -> SplitResponse:
    # The split and the profiles of its parts run in one worker process; the parts come back through
    # its pipe and are encrypted here.
    with state.parsers.session() as parser:
        with (
            state.blobs.open(parent.blob_digest) as f,
            state.blobs.writer() as w_train,
            state.blobs.writer() as w_test,
        ):
            parser.split(
                parent.format,
                f,
                w_train,
                w_test,
                train_size=body.train_size,
                seed=body.seed,
                stratify=body.stratify,
                size=parent.size_bytes,
            )
            blobs = {"train": w_train.commit(), "test": w_test.commit()}
        profiles: dict[str, data.Profile] = {}
        for part, info in blobs.items():
            with state.blobs.open(info.digest) as f:
                profiles[part] = parser.profile(parent.format, f, size=info.size)
    out: dict[str, DatasetVersion] = {}
    params = body.model_dump()
    for part, info in blobs.items():
        prof = profiles[part]
        out[part] = state.keep_blob(
            info.digest,
            functools.partial(
                state.store.datasets.create_version,
                workspace_id=principal.workspace.id,
                name=f"{parent.name}-{part}",
                format=parent.format,
                filename=f"{parent.name}-v{parent.version}-{part}.{parent.format}",
                blob_digest=info.digest,
                size_bytes=info.size,
                num_rows=prof.num_rows,
                schema=prof.schema,
                stats=prof.stats,
                lineage={
                    "source": "split",
                    "parent": {"id": parent.id, "name": parent.name, "version": parent.version},
                    "part": part,
                    "params": params,
                },
            ),
        )
    return SplitResponse(
        train=DatasetVersionOut.model_validate(out["train"]),
        test=DatasetVersionOut.model_validate(out["test"]),
    )


@router.post("/datasets/{name}/versions/{version}/split", response_model=SplitResponse, status_code=201)
def datasets_split(
    name: str, version: str, body: SplitRequest, principal: Member, state: State
) -> SplitResponse:
    """Split a version into ``<name>-train`` and ``<name>-test`` versions, deterministic for a seed."""
    parent = state.store.datasets.get_version(
        principal.workspace.id, check_name(name), parse_version(version)
    )
    return _split(state, principal, parent, body)


@router.delete("/datasets/{name}", status_code=204)
def datasets_delete(name: str, principal: Member, state: State) -> Response:
    """Delete a dataset with all its versions; a stored file is removed only when no reference of
    any kind (dataset or model version, job, upload), in any workspace, holds it any more."""
    state.drop_blobs(lambda: state.store.datasets.delete_dataset(principal.workspace.id, check_name(name)))
    state.versions.discard_where(lambda key, _: key[:2] == (principal.workspace.id, name))
    return Response(status_code=204)
