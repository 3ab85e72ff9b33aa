"""The ``evaluate`` and ``batch_predict`` jobs at submission (docs/evaluation.md), and what the server
records from them: metrics merged into a model version, lineage of a predictions dataset.

Checks (422 naming the field): ``spec.model`` resolves to a version of this workspace (or the zoo, for
``batch_predict``; an evaluation is recorded on the version, so it needs one of this workspace) that
the loader can run on rows (of text models, a text classifier); ``spec.datasets.data`` resolves to a
dataset version that has the model's feature columns (a text model: column ``spec.text``);
``spec.target`` (default: the model's own target) is one of its columns. Both are pinned to exact
versions: ``resolved_model`` and ``resolved_datasets``.
"""

from __future__ import annotations

import itertools
from typing import Any

import pydantic

from aicloud.auth import Principal
from aicloud.entities import ModelVersion
from aicloud.errors import NotFoundError, PermissionDeniedError, ValidationError
from aicloud.schemas.evaluation import BatchPredictSpec, EvaluateSpec
from aicloud.schemas.jobs import JobCreate
from aicloud.server.services.finetune_specs import pinned_ref
from aicloud.server.services.models import resolve_model_ref
from aicloud.server.services.names import check_name
from aicloud.server.services.specs import _pydantic_error, _resolve_dataset
from aicloud.server.state import AppState

__all__ = ["job_output_lineage", "validate_batch_predict", "validate_evaluate"]


def _model(state: AppState, workspace_id: str, ref: str, *, own: bool) -> ModelVersion:
    try:
        version = resolve_model_ref(state, workspace_id, ref)
    except (NotFoundError, ValidationError, PermissionDeniedError) as exc:
        raise ValidationError.field("spec.model", f"model {ref!r}: {exc.message}") from None
    if own and version.workspace_id != workspace_id:
        raise ValidationError.field(
            "spec.model",
            f"{ref!r} is a zoo version; its metrics are not yours to record (batch_predict runs it)",
        )
    config = version.config or {}
    if isinstance(config.get("text"), dict) and config.get("task") != "text-classification":
        raise ValidationError.field(
            "spec.model", f"{ref!r} is a {config.get('task')} model; of text models, classifiers are scored"
        )
    return version


def _columns(schema: list[dict[str, Any]]) -> list[str]:
    """The dataset's columns as a table has them (an NPZ array ``X`` of shape [8, 8] is ``X_0_0``...)."""
    out: list[str] = []
    for c in schema or []:
        if not isinstance(c, dict):
            continue
        name, shape = str(c.get("name")), [int(s) for s in c.get("shape") or []]
        out.append(name)
        if shape:
            out.extend(name + "_" + "_".join(map(str, i)) for i in itertools.product(*map(range, shape)))
    return out


def _features(version: ModelVersion) -> list[str]:
    """The tabular model's input columns; none for a model of tensor inputs (signature inputs with a
    ``shape``: the job feeds them the data's columns, docs/evaluation.md)."""
    config = version.config or {}
    pre = config.get("preprocessing")
    if isinstance(pre, dict) and isinstance(pre.get("features"), list):
        return [str(f) for f in pre["features"]]
    inputs = (config.get("signature") or {}).get("inputs") or version.signature.get("inputs") or []
    inputs = [t for t in inputs if isinstance(t, dict) and t.get("name")]
    if inputs and all(t.get("shape") for t in inputs):
        return []
    return [str(t["name"]) for t in inputs]


def _resolve(
    state: AppState, principal: Principal, spec: EvaluateSpec | BatchPredictSpec, *, own: bool
) -> tuple[ModelVersion, dict[str, Any], list[str]]:
    ws = principal.workspace.id
    unknown = [role for role in spec.datasets if role != "data"]
    if unknown or "data" not in spec.datasets:
        raise ValidationError.field("spec.datasets", 'one dataset, by role "data": {"data": "name:version"}')
    resolved = _resolve_dataset(state, ws, spec.datasets["data"], "spec.datasets.data")
    version = _model(state, ws, spec.model, own=own)
    columns = _columns(state.store.datasets.get_version_by_id(ws, resolved["id"]).schema)
    text_model = isinstance((version.config or {}).get("text"), dict)
    field = "spec.text" if text_model else "spec.datasets.data"
    missing = [c for c in ([spec.text] if text_model else _features(version)) if c not in columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValidationError.field(
            field,
            f"dataset {resolved['name']}:{resolved['version']} lacks the model's input column(s) {shown} "
            f"(its columns: {', '.join(columns[:12])})",
        )
    return version, resolved, columns


def _out(
    spec: EvaluateSpec | BatchPredictSpec, version: ModelVersion, resolved: dict[str, Any]
) -> dict[str, Any]:
    out = spec.model_dump(mode="json")
    out["resolved_datasets"] = {"data": resolved}
    out["resolved_model"] = {
        "id": version.id,
        "ref": pinned_ref(spec.model, version),
        "name": version.name,
        "version": version.version,
    }
    return out


def validate_evaluate(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """An ``evaluate`` job: a version of this workspace scored on a dataset version with its target."""
    try:
        spec = EvaluateSpec.model_validate(body.spec)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, "spec") from None
    version, resolved, columns = _resolve(state, principal, spec, own=True)
    target = spec.target or (version.config or {}).get("target")
    if not target:
        raise ValidationError.field("spec.target", f"{spec.model!r} names no target column; set `target`")
    if str(target) not in columns:
        raise ValidationError.field(
            "spec.target",
            f"dataset {resolved['name']}:{resolved['version']} has no column {target!r} "
            f"(its columns: {', '.join(columns[:12])})",
        )
    out = _out(spec, version, resolved)
    out["target"] = str(target)
    name = body.name or f"evaluate-{version.name}-{resolved['name']}"[:100]
    return check_name(name, "name"), out


def validate_batch_predict(
    state: AppState, principal: Principal, body: JobCreate
) -> tuple[str, dict[str, Any]]:
    """A ``batch_predict`` job: a version (or a zoo one) run over a dataset version, written to ``output``."""
    try:
        spec = BatchPredictSpec.model_validate(body.spec)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, "spec") from None
    version, resolved, _ = _resolve(state, principal, spec, own=False)
    out = _out(spec, version, resolved)
    out["output"] = check_name(spec.output or f"{resolved['name']}-predictions"[:100], "spec.output")
    name = body.name or f"predict-{version.name}-{resolved['name']}"[:100]
    return check_name(name, "name"), out


def job_output_lineage(state: AppState, principal: Principal) -> dict[str, Any] | None:
    """The lineage of a dataset version uploaded by a ``batch_predict`` job's token (None for any other
    uploader): the job, its model version and its input dataset version, as the server resolved them."""
    job_id = principal.job_id
    if job_id is None:
        return None
    job = state.store.jobs.get(principal.workspace.id, job_id)
    if job.kind.value != "batch_predict":
        return None
    return {
        "source": "batch_predict",
        "job_id": job.id,
        "model": job.spec.get("resolved_model"),
        "dataset": (job.spec.get("resolved_datasets") or {}).get("data"),
    }


def check_metrics_writer(state: AppState, principal: Principal, version: ModelVersion) -> None:
    """A job's token may record metrics only on the version its own ``evaluate`` job scores."""
    job_id = principal.job_id
    if job_id is None:
        return
    job = state.store.jobs.get(principal.workspace.id, job_id)
    resolved = job.spec.get("resolved_model") or {}
    if job.kind.value != "evaluate" or resolved.get("id") != version.id:
        raise PermissionDeniedError(
            "a job's token records metrics only on the version its evaluate job scores",
            details={"job": job_id, "version": version.id},
        )
