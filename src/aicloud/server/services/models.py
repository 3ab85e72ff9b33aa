"""Models beyond HTTP: what a reference names, and what made a new version (its lineage)."""

from __future__ import annotations

from typing import Any

from aicloud.auth import Principal
from aicloud.entities import ModelVersion
from aicloud.entities.core import ZOO_REF_PREFIX, ZOO_WORKSPACE_ID
from aicloud.errors import NotFoundError, PermissionDeniedError
from aicloud.schemas.jobs import ModelVersionCreate
from aicloud.server.services.names import check_id, check_name, parse_version
from aicloud.server.state import AppState

__all__ = ["READ_ONLY_ZOO", "refuse_zoo_write", "resolve_model_ref", "version_lineage"]

READ_ONLY_ZOO = "zoo models are read-only: fine-tune or export them into your workspace"


def refuse_zoo_write(ref: str) -> PermissionDeniedError:
    """The 403 of a write (a new version, an alias, a delete) to a ``zoo/<entry>`` model."""
    return PermissionDeniedError(
        f"{ref}: {READ_ONLY_ZOO}", details={"model": ref, "read_only": True, "docs": "docs/zoo.md"}
    )


def version_lineage(state: AppState, principal: Principal, body: ModelVersionCreate) -> dict[str, Any]:
    """What made a new model version: the job (and its datasets and code), the run. A job's token
    may name only its own job and runs."""
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
        base = job.spec.get("resolved_base") if job.kind.value == "finetune" else None
        if isinstance(base, dict):  # a fine-tuned version derives from its base (as compression's do)
            lineage["task"] = job.spec.get("task")
            lineage["parent_version"] = base.get("id")
            lineage["derived"] = {"from": base.get("ref"), "method": f"finetune-{job.spec.get('method')}"}
    return lineage


def resolve_model_ref(state: AppState, workspace_id: str, ref: str) -> ModelVersion:
    """``name``, ``name:3``, ``name@production`` → a model version (for deployments and the SDK);
    ``zoo/<entry>`` and ``zoo/<entry>:<version>`` → a version of the zoo, from any workspace."""
    if ref.startswith(ZOO_REF_PREFIX):
        entry = ref[len(ZOO_REF_PREFIX) :]
        try:
            return _resolve(state, ZOO_WORKSPACE_ID, entry)
        except NotFoundError as exc:
            name = entry.partition(":")[0].partition("@")[0]
            raise NotFoundError(
                f"{ref}: {exc.message}; the zoo has the entries `aicloud zoo list` shows, and an entry "
                f"is there once pulled (`aicloud zoo pull {name}`)",
                details={"kind": "model", "zoo": True, "ref": ref},
            ) from None
    return _resolve(state, workspace_id, ref)


def _resolve(state: AppState, workspace_id: str, ref: str) -> ModelVersion:
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return state.store.models.get_version_by_alias(
            workspace_id, check_name(name), check_name(alias, "alias")
        )
    name, _, version = ref.partition(":")
    if not name:
        raise NotFoundError.of("model", ref)
    return state.store.models.get_version(workspace_id, check_name(name), parse_version(version or "latest"))
