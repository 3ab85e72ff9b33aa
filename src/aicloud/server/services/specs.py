"""A submitted job's spec, validated and resolved: one validator per job kind.

:func:`validate_job` turns a ``POST /jobs`` body into the job's name and stored spec with the
validator of its kind (:data:`VALIDATORS`):

* ``train``: the :class:`~aicloud.schemas.training.TrainSpec` (422 naming the field), its datasets
  resolved to exact versions (lineage) and checked against the task, its secrets present.
* ``command``: the :class:`~aicloud.schemas.training.CommandSpec`, its datasets resolved, its code
  archive owned by the workspace, its secrets present.
* ``finetune``: the :class:`~aicloud.schemas.finetune.FinetuneSpec`, its datasets resolved and holding
  the text (or pixel) and label columns, its base resolved (a zoo entry or the workspace's version) to
  a text encoder or a built-in CNN (:mod:`aicloud.server.services.finetune_specs`).
* ``sweep``: the sweep fields (``spec.space.lr``, ``spec.metric``...), then the base train spec with
  every check a ``train`` job gets (errors name ``spec.train.<field>``), or the base command spec with
  every check a ``command`` job gets (``spec.command.<field>``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pydantic

from aicloud.auth import Principal
from aicloud.entities import Job, JobKind
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.finetune import FinetuneSpec
from aicloud.schemas.jobs import JobCreate
from aicloud.schemas.sweeps import SweepSpec, check_sweep_spec
from aicloud.schemas.training import CommandSpec, TrainSpec, check_train_spec
from aicloud.server.services.finetune_specs import check_finetune
from aicloud.server.services.names import check_name, parse_version
from aicloud.server.state import AppState

__all__ = [
    "VALIDATORS",
    "submit_job",
    "validate_command",
    "validate_finetune",
    "validate_job",
    "validate_sweep",
    "validate_train",
]

#: A kind's validator: the job's name and its validated spec, with ``resolved_datasets``.
Validator = Callable[[AppState, Principal, JobCreate], tuple[str, dict[str, Any]]]


#: What an unknown field's error says (pydantic's "Extra inputs are not permitted" does not).
UNKNOWN_FIELD = "unknown field: check its spelling against the spec's fields (docs/training.md)"


def _pydantic_error(exc: pydantic.ValidationError, prefix: str) -> ValidationError:
    details = [
        {
            "field": ".".join([prefix, *(str(p) for p in e["loc"])]),
            "message": UNKNOWN_FIELD if e["type"] == "extra_forbidden" else e["msg"],
        }
        for e in exc.errors()
    ]
    return ValidationError("; ".join(f"{d['field']}: {d['message']}" for d in details), details=details)


def _resolve_dataset(state: AppState, workspace_id: str, ref: str, field: str) -> dict[str, Any]:
    name, _, version = ref.partition(":")
    try:
        check_name(name, field)
        row = state.store.datasets.get_version(workspace_id, name, parse_version(version or "latest"))
    except (NotFoundError, ValidationError) as exc:
        raise ValidationError.field(field, f"dataset {ref!r}: {exc.message}") from None
    return {"id": row.id, "name": row.name, "version": row.version, "format": row.format}


def _check_secrets(state: AppState, workspace_id: str, names: list[str]) -> None:
    existing = {s.name for s in state.store.secrets.list(workspace_id)}
    missing = [n for n in names if n not in existing]
    if missing:
        raise ValidationError.field("spec.secrets", f"no such secret(s): {', '.join(missing)}")


def validate_train(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """A ``train`` job: a built-in task on resolved train and eval datasets."""
    ws = principal.workspace.id
    try:
        train = TrainSpec.model_validate(body.spec)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, "spec") from None
    resolved = {
        "train": _resolve_dataset(state, ws, train.dataset, "spec.dataset"),
        "eval": _resolve_dataset(state, ws, train.eval_dataset, "spec.eval_dataset"),
    }
    parent = state.store.datasets.get_version_by_id(ws, resolved["train"]["id"])
    check_train_spec(train, parent.schema, parent.stats)
    _check_secrets(state, ws, train.secrets)
    spec = train.model_dump(mode="json")
    spec["resolved_datasets"] = resolved
    name = body.name or train.model_name or f"{train.task}-{parent.name}"
    return check_name(name, "name"), spec


def validate_command(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """A ``command`` job: user code (an uploaded archive) with datasets by role."""
    ws = principal.workspace.id
    try:
        command = CommandSpec.model_validate(body.spec)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, "spec") from None
    resolved = {
        check_name(role, "spec.datasets"): _resolve_dataset(state, ws, ref, f"spec.datasets.{role}")
        for role, ref in command.datasets.items()
    }
    if command.code is not None and not state.store.blob_refs.owns(ws, command.code):
        raise ValidationError.field("spec.code", "no such code archive in this workspace; upload it first")
    _check_secrets(state, ws, command.secrets)
    spec = command.model_dump(mode="json")
    spec["resolved_datasets"] = resolved
    return check_name(body.name or "command", "name"), spec


def _under_base(exc: ValidationError, base: str) -> ValidationError:
    """An error of the base spec, its fields renamed ``spec.X`` → ``spec.<base>.X`` (train, command)."""

    def rename(field: Any) -> Any:
        return f"spec.{base}." + field[5:] if isinstance(field, str) and field.startswith("spec.") else field

    details = exc.details if isinstance(exc.details, list) else []
    renamed = [{**d, "field": rename(d.get("field"))} if isinstance(d, dict) else d for d in details]
    message = exc.message[5:] if exc.message.startswith("spec.") else exc.message
    return ValidationError(
        f"spec.{base}.{message}" if renamed else exc.message, details=renamed or exc.details
    )


def validate_sweep(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """A ``sweep`` job: the sweep fields and the base train (or command) spec, resolved as that job's."""
    try:
        sweep = SweepSpec.model_validate(body.spec)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, "spec") from None
    check_sweep_spec(sweep)
    if sweep.command is not None:
        return _validate_command_sweep(state, principal, body, sweep)
    train_body = JobCreate(kind=JobKind.TRAIN, name=body.name, spec=dict(body.spec.get("train") or {}))
    try:
        name, train = validate_train(state, principal, train_body)
    except ValidationError as exc:
        raise _under_base(exc, "train") from None
    spec = sweep.model_dump(mode="json")
    spec["train"] = train
    spec["resolved_datasets"] = train.get("resolved_datasets")
    if body.name is None:
        name = train.get("model_name") or f"sweep-{train['resolved_datasets']['train']['name']}"[:100]
    return name, spec


def _validate_command_sweep(
    state: AppState, principal: Principal, body: JobCreate, sweep: SweepSpec
) -> tuple[str, dict[str, Any]]:
    """A sweep over a command: the base command spec checked and resolved as a command job's."""
    command_body = JobCreate(kind=JobKind.COMMAND, name=body.name, spec=dict(body.spec.get("command") or {}))
    try:
        _, command = validate_command(state, principal, command_body)
    except ValidationError as exc:
        raise _under_base(exc, "command") from None
    spec = sweep.model_dump(mode="json")
    spec["command"] = command
    spec["resolved_datasets"] = command.get("resolved_datasets")
    first = next(iter((command.get("resolved_datasets") or {}).values()), None)
    name = body.name or (f"sweep-{first['name']}"[:100] if first else "sweep")
    return check_name(name, "name"), spec


def validate_finetune(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """A ``finetune`` job: a base model version adapted to resolved train and eval datasets."""
    ws = principal.workspace.id
    try:
        finetune = FinetuneSpec.model_validate(body.spec)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, "spec") from None
    resolved = {
        "train": _resolve_dataset(state, ws, finetune.dataset, "spec.dataset"),
        "eval": _resolve_dataset(state, ws, finetune.eval_dataset, "spec.eval_dataset"),
    }
    spec = check_finetune(state, ws, finetune, resolved)
    name = body.name or finetune.model_name or f"{finetune.method}-{resolved['train']['name']}"[:100]
    return check_name(name, "name"), spec


#: The validator of each job kind.
def _validator_in(module: str, name: str) -> Validator:
    """The validator ``name`` of ``aicloud.server.services.<module>``, imported at its first call."""

    def validate(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
        found: Validator = getattr(importlib.import_module(f"aicloud.server.services.{module}"), name)
        return found(state, principal, body)

    return validate


VALIDATORS: dict[JobKind, Validator] = {
    JobKind.TRAIN: validate_train,
    JobKind.COMMAND: validate_command,
    JobKind.SWEEP: validate_sweep,
    JobKind.FINETUNE: validate_finetune,
    JobKind.KERAS: _validator_in("keras_specs", "validate_keras"),
    JobKind.EVALUATE: _validator_in("evaluation_specs", "validate_evaluate"),
    JobKind.BATCH_PREDICT: _validator_in("evaluation_specs", "validate_batch_predict"),
}


def validate_job(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """The job's name and its validated spec (with ``resolved_datasets``), by the validator of its kind."""
    return VALIDATORS[body.kind](state, principal, body)


def submit_job(state: AppState, principal: Principal, body: JobCreate) -> Job:
    """Validate ``body`` by its kind, queue the job ``pending`` and wake the job controller (the API's
    ``POST /jobs`` and the console's job form alike)."""
    name, spec = validate_job(state, principal, body)
    job = state.store.jobs.create(
        workspace_id=principal.workspace.id,
        name=name,
        kind=body.kind,
        spec=spec,
        priority=body.priority,
        created_by=principal.token.id,
    )
    state.wake_jobs()
    return job
