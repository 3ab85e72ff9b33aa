"""The model registry: versions with artifacts, signature, metrics, lineage; movable aliases."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from aicloud.errors import ValidationError
from aicloud.schemas.compression import (
    CompareOut,
    CompareRequest,
    ExportRequest,
    PruneRequest,
    QuantizeRequest,
)
from aicloud.schemas.evaluation import MetricsRecord
from aicloud.schemas.jobs import AliasSet, ModelOut, ModelVersionCreate, ModelVersionOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._paging import DEFAULT_LIMIT, MAX_LIMIT, Limit, Offset, set_total
from aicloud.server.services.bundles import bundle_version
from aicloud.server.services.compression import (
    compare_versions,
    export_version,
    prune_version,
    quantize_version,
)
from aicloud.server.services.models import version_lineage
from aicloud.server.services.names import check_id, check_name, parse_version

router = APIRouter(tags=["models"])


@router.post("/models/{name}/versions", response_model=ModelVersionOut, status_code=201)
def models_create_version(
    name: str, body: ModelVersionCreate, principal: Member, state: State
) -> ModelVersionOut:
    """Register artifact files (blobs this workspace uploaded) as the next version of model ``name``."""
    check_name(name)
    for filename, digest in body.files.items():
        check_name(filename, "files")
        if not state.store.blob_refs.owns(principal.workspace.id, digest):
            raise ValidationError.field(
                f"files.{filename}", f"blob {digest[:80]!r} was not uploaded to this workspace"
            )
    if "config.json" not in body.files:
        raise ValidationError.field("files", "a model version needs a config.json")
    lineage = version_lineage(state, principal, body)
    version = state.store.models.create_version(
        workspace_id=principal.workspace.id,
        name=name,
        files=body.files,
        signature=body.signature,
        config=body.config,
        metrics=body.metrics,
        lineage=lineage,
    )
    if lineage["job_id"]:
        state.store.jobs.update(lineage["job_id"], model_version_id=version.id)
    return ModelVersionOut.model_validate(version)


@router.get("/models", response_model=list[ModelOut])
def models_list(
    principal: Viewer, state: State, response: Response, offset: Offset = 0, limit: Limit = DEFAULT_LIMIT
) -> list[ModelOut]:
    """Registered models, newest first, ``limit`` after ``offset``; ``X-Total-Count``: how many in all."""
    ws = principal.workspace.id
    set_total(response, state.store.models.count_models(ws))
    return [
        ModelOut.model_validate(m) for m in state.store.models.list_models(ws, offset=offset, limit=limit)
    ]


@router.get("/models/{name}/versions", response_model=list[ModelVersionOut])
def models_list_versions(
    name: str,
    principal: Viewer,
    state: State,
    response: Response,
    offset: Offset = 0,
    limit: Limit = MAX_LIMIT,
    newest_first: bool = False,
) -> list[ModelVersionOut]:
    """A model's versions, oldest first (newest first with ``newest_first``), ``limit`` after
    ``offset``; ``X-Total-Count`` says how many versions it has."""
    ws, name = principal.workspace.id, check_name(name)
    set_total(response, state.store.models.count_versions(ws, name))
    versions = state.store.models.list_versions(
        ws, name, offset=offset, limit=limit, newest_first=newest_first
    )
    return [ModelVersionOut.model_validate(v) for v in versions]


@router.get("/models/{name}/versions/{version}", response_model=ModelVersionOut)
def models_get_version(name: str, version: str, principal: Viewer, state: State) -> ModelVersionOut:
    row = state.store.models.get_version(principal.workspace.id, check_name(name), parse_version(version))
    return ModelVersionOut.model_validate(row)


@router.post("/models/{name}/versions/{version}/metrics", response_model=ModelVersionOut)
def models_record_metrics(
    name: str, version: str, body: MetricsRecord, principal: Member, state: State
) -> ModelVersionOut:
    """Merge evaluation metrics (``eval:<dataset>:<version>:<metric>``, docs/evaluation.md) into the
    version's metrics; the ones it was registered with stay as they are. A job's token may write only
    to the version its own ``evaluate`` job scores."""
    from aicloud.server.services.evaluation_specs import check_metrics_writer

    row = state.store.models.get_version(principal.workspace.id, check_name(name), parse_version(version))
    bad = [k for k in body.metrics if not k.startswith("eval:") or len(k) > 300]
    if bad:
        raise ValidationError.field(
            f"metrics.{bad[0][:80]}", "an evaluation metric is named eval:<dataset>:<version>:<metric>"
        )
    check_metrics_writer(state, principal, row)
    return ModelVersionOut.model_validate(
        state.store.models.merge_metrics(principal.workspace.id, row.id, body.metrics)
    )


@router.get("/model-versions/{version_id}", response_model=ModelVersionOut)
def models_get_version_by_id(version_id: str, principal: Viewer, state: State) -> ModelVersionOut:
    row = state.store.models.get_version_by_id(principal.workspace.id, check_id(version_id, "version_id"))
    return ModelVersionOut.model_validate(row)


@router.get("/models/{name}/aliases/{alias}", response_model=ModelVersionOut)
def models_get_alias(name: str, alias: str, principal: Viewer, state: State) -> ModelVersionOut:
    row = state.store.models.get_version_by_alias(
        principal.workspace.id, check_name(name), check_name(alias, "alias")
    )
    return ModelVersionOut.model_validate(row)


@router.put("/models/{name}/aliases/{alias}", response_model=ModelVersionOut)
def models_set_alias(
    name: str, alias: str, body: AliasSet, principal: Member, state: State
) -> ModelVersionOut:
    """Point ``alias`` (e.g. ``production``) at a version; it moves atomically from any other."""
    if (alias.isascii() and alias.isdigit()) or alias == "latest":
        raise ValidationError.field("alias", f"{alias!r} would be read as a version; pick a name")
    row = state.store.models.set_alias(
        principal.workspace.id, check_name(name), check_name(alias, "alias"), body.version
    )
    state.wake_deployments()  # a deployment of name@alias rolls to the version now (docs/serving.md)
    return ModelVersionOut.model_validate(row)


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def models_delete_alias(name: str, alias: str, principal: Member, state: State) -> Response:
    state.store.models.delete_alias(principal.workspace.id, check_name(name), check_name(alias, "alias"))
    return Response(status_code=204)


# --- compression (docs/compression.md): the work runs in a sandboxed worker, never in this process


@router.post("/models/{name}/versions/{version}/export", response_model=ModelVersionOut, status_code=201)
def models_export_version(
    name: str, version: str, body: ExportRequest, principal: Member, state: State
) -> ModelVersionOut:
    """Export a version to ONNX as the next version, checked against it on examples built from the
    signature (422 naming the difference when it is over the tolerance; 409 when it is ONNX already)."""
    parent = state.store.models.get_version(principal.workspace.id, check_name(name), parse_version(version))
    return ModelVersionOut.model_validate(export_version(state, principal, parent, body))


@router.post("/models/{name}/versions/{version}/quantize", response_model=ModelVersionOut, status_code=201)
def models_quantize_version(
    name: str, version: str, body: QuantizeRequest, principal: Member, state: State
) -> ModelVersionOut:
    """Quantize a version to int8 (dynamic, or static on a calibration dataset) as the next version."""
    parent = state.store.models.get_version(principal.workspace.id, check_name(name), parse_version(version))
    return ModelVersionOut.model_validate(quantize_version(state, principal, parent, body))


@router.post("/models/{name}/versions/{version}/prune", response_model=ModelVersionOut, status_code=201)
def models_prune_version(
    name: str, version: str, body: PruneRequest, principal: Member, state: State
) -> ModelVersionOut:
    """Remove whole units and channels of a built-in model, fine-tune it, register it as the next version."""
    parent = state.store.models.get_version(principal.workspace.id, check_name(name), parse_version(version))
    return ModelVersionOut.model_validate(prune_version(state, principal, parent, body))


@router.post("/models/{name}/compare", response_model=CompareOut)
def models_compare(name: str, body: CompareRequest, principal: Member, state: State) -> CompareOut:
    """Size, p50 latency at batch 1 and 32 on this machine, and accuracy (or cosine to the first)
    of a model's versions. Member: it runs a worker on the server's CPUs."""
    return compare_versions(state, principal, name, body)


# --- edge bundles (docs/edge.md)


@router.post("/models/{name}/versions/{version}/bundle", response_class=FileResponse)
def models_bundle_version(name: str, version: str, principal: Member, state: State) -> FileResponse:
    """The version as a signed edge bundle (a tar: ONNX model, config, signature, signed manifest).
    A version that is not ONNX is exported in the compression worker first (not registered).
    Member: it may run a worker on the server's CPUs."""
    mv = state.store.models.get_version(principal.workspace.id, check_name(name), parse_version(version))
    folder = Path(tempfile.mkdtemp(prefix="aicloud-bundle-out-"))
    try:
        out = folder / f"{mv.name}-{mv.version}.bundle"
        bundle_version(state, principal.workspace.name, mv, out)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        out,
        media_type="application/x-tar",
        filename=out.name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
