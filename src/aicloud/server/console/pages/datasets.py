"""Datasets: the list, a dataset's versions with schema, per-column stats and lineage, and an upload
with a progress bar (the browser's XHR streams the file here; it is stored and profiled exactly as
``POST /api/v1/datasets/{name}/versions`` does)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from aicloud.entities import DatasetVersion
from aicloud.errors import UnsupportedFormatError
from aicloud.server.console import data
from aicloud.server.console.render import ConsoleRoute, page
from aicloud.server.console.session import Member, Viewer
from aicloud.server.deps import State
from aicloud.server.routes._uploads import receive_upload
from aicloud.server.services.datasets import ingest_upload, preview_version
from aicloud.server.services.names import check_name

router = APIRouter(route_class=ConsoleRoute)
PAGE = data.PAGE
PREVIEW_ROWS = 20


@router.get("/datasets")
async def datasets_list(
    request: Request, principal: Viewer, state: State, offset: int = Query(default=0, ge=0, le=1_000_000)
) -> Response:
    datasets = await run_in_threadpool(data.datasets_page, state.store, principal.workspace.id, offset=offset)
    return page(request, "datasets.html", title="Datasets", datasets=datasets.items, **datasets.pager())


def _stats_rows(version: DatasetVersion) -> list[dict[str, Any]]:
    """One row per column: its schema entry, its stats, and where the mean sits between min and max
    (a bar, for numeric columns) or the histogram the profile stored, if it has one."""
    rows = []
    for column in version.schema:
        stats: dict[str, Any] = version.stats.get(column.get("name", ""), {})
        low: Any = stats.get("min")
        high: Any = stats.get("max")
        mean: Any = stats.get("mean")
        position = None
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high, mean))
        if numeric and high != low:
            position = max(0.0, min(100.0, 100.0 * (mean - low) / (high - low)))
        hist = stats.get("histogram") or {}
        counts: list[int] = (hist.get("counts") if isinstance(hist, dict) else None) or []
        peak = max(counts) if counts else 0
        bars = [round(100 * c / peak) for c in counts] if peak else []
        rows.append({"column": column, "stats": stats, "position": position, "bars": bars})
    return rows


@router.get("/datasets/{name}")
async def dataset_page(
    request: Request,
    name: str,
    principal: Viewer,
    state: State,
    version: int | None = Query(default=None, ge=1),
) -> Response:
    ws = principal.workspace.id
    versions = await run_in_threadpool(
        lambda: state.store.datasets.list_versions(ws, check_name(name), limit=PAGE + 1, newest_first=True)
    )
    chosen = next((v for v in versions if v.version == version), None) if version else versions[0]
    if chosen is None:
        chosen = await run_in_threadpool(state.store.datasets.get_version, ws, name, version)  # or the 404
    return page(
        request,
        "dataset.html",
        title=name,
        name=name,
        versions=versions[:PAGE],
        more_versions=len(versions) > PAGE,
        v=chosen,
        rows=_stats_rows(chosen),
    )


@router.get("/datasets/{name}/preview")
async def dataset_preview(
    request: Request, name: str, principal: Viewer, state: State, version: int = Query(ge=1)
) -> Response:
    """An htmx fragment: the version's first rows, read in a parser worker (never stored)."""
    row = await run_in_threadpool(
        state.store.datasets.get_version, principal.workspace.id, check_name(name), version
    )
    try:
        shown = await run_in_threadpool(preview_version, state, row, PREVIEW_ROWS)
    except UnsupportedFormatError as exc:
        return page(request, "_preview.html", columns=[], rows=[], note=exc.message)
    return page(request, "_preview.html", columns=shown["columns"], rows=shown["rows"], note="")


@router.post("/datasets/{name}/upload")
async def dataset_upload(request: Request, name: str, principal: Member, state: State) -> Response:
    """The console's upload: a multipart body with a ``file`` part (CSRF token in the header).
    Answers where the new version's page is; errors are pages like any console error."""
    check_name(name)
    upload = await receive_upload(request, state.blobs, state.settings.max_upload_bytes)
    version = await run_in_threadpool(
        ingest_upload, state, principal.workspace.id, name, upload.blob, upload.filename, None
    )
    location = f"/datasets/{version.name}?version={version.version}"
    return JSONResponse({"location": location, "version": version.version}, status_code=201)
