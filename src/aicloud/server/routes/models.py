"""The model registry: versions with artifacts, signature, metrics, lineage; movable aliases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from aicloud.auth import Principal
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.jobs import AliasSet, ModelOut, ModelVersionCreate, ModelVersionOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._common import check_id, check_name, parse_version
from aicloud.server.state import AppState

router = APIRouter(tags=["models"])


def _lineage(state: AppState, principal: Principal, body: ModelVersionCreate) -> dict[str, Any]:
    """What made this version: the job (and its datasets and code), the run."""
    ws = principal.workspace.id
    job_id = body.job_id or principal.job_id
    principal.require_job(job_id)
    lineage: dict[str, Any] = {"job_id": job_id, "run_id": body.run_id, "datasets": [], "code_digest": None}
    if body.run_id is not None:
        run = state.store.runs.get(ws, check_id(body.run_id, "run_id"))
        principal.require_job(run.job_id)
        lineage["job_id"] = job_id = job_id or run.job_id
    if job_id is not None:
        job = state.store.jobs.get(ws, check_id(job_id, "job_id"))
        lineage["job_name"] = job.name
        lineage["job_kind"] = job.kind.value
        for role, ref in (job.spec.get("resolved_datasets") or {}).items():
            lineage["datasets"].append({"role": role, **ref})
        lineage["code_digest"] = job.spec.get("code")
        if job.kind.value == "train":
            lineage["task"] = job.spec.get("task")
    return lineage


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
    lineage = _lineage(state, principal, body)
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
def models_list(principal: Viewer, state: State) -> list[ModelOut]:
    return [ModelOut.model_validate(m) for m in state.store.models.list_models(principal.workspace.id)]


@router.get("/models/{name}/versions", response_model=list[ModelVersionOut])
def models_list_versions(name: str, principal: Viewer, state: State) -> list[ModelVersionOut]:
    versions = state.store.models.list_versions(principal.workspace.id, check_name(name))
    return [ModelVersionOut.model_validate(v) for v in versions]


@router.get("/models/{name}/versions/{version}", response_model=ModelVersionOut)
def models_get_version(name: str, version: str, principal: Viewer, state: State) -> ModelVersionOut:
    row = state.store.models.get_version(principal.workspace.id, check_name(name), parse_version(version))
    return ModelVersionOut.model_validate(row)


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
    return ModelVersionOut.model_validate(row)


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def models_delete_alias(name: str, alias: str, principal: Member, state: State) -> Response:
    state.store.models.delete_alias(principal.workspace.id, check_name(name), check_name(alias, "alias"))
    return Response(status_code=204)


def resolve_model_ref(state: AppState, workspace_id: str, ref: str) -> Any:
    """``name``, ``name:3``, ``name@production`` → a model version (for deployments and the SDK)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return state.store.models.get_version_by_alias(
            workspace_id, check_name(name), check_name(alias, "alias")
        )
    name, _, version = ref.partition(":")
    if not name:
        raise NotFoundError.of("model", ref)
    return state.store.models.get_version(workspace_id, check_name(name), parse_version(version or "latest"))
