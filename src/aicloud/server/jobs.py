"""Glue between the job controller and the rest of the control plane.

* :func:`validate_job` turns a ``POST /jobs`` body into a stored spec: it validates it
  (422 naming the field), resolves dataset references to exact versions (lineage), and
  checks that code blobs and secrets exist.
* :class:`JobRuntime` gives the controller its ``launcher`` (a run, a job-scoped token and
  the workload's environment) and its ``on_finished`` hook (keep the log as a blob, revoke
  the token, close the run).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import pydantic

from aicloud.auth import Principal, mint_token
from aicloud.entities import Job, JobKind, JobStatus, Role, RunStatus
from aicloud.errors import NotFoundError, ValidationError
from aicloud.executors.base import LaunchRequest, WorkloadLimits
from aicloud.schemas.jobs import JobCreate
from aicloud.schemas.training import CommandSpec, TrainSpec, check_train_spec
from aicloud.server.routes._common import check_name, parse_version
from aicloud.server.routes.secrets import secret_aad
from aicloud.server.state import AppState

log = logging.getLogger("aicloud.jobs")


def _pydantic_error(exc: pydantic.ValidationError, prefix: str) -> ValidationError:
    details = [
        {"field": ".".join([prefix, *(str(p) for p in e["loc"])]), "message": e["msg"]} for e in exc.errors()
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


def validate_job(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """The job's name and its validated spec, with ``resolved_datasets``."""
    ws = principal.workspace.id
    if body.kind is JobKind.SWEEP:
        from aicloud.server.sweeps import validate_sweep  # it calls back here for the base train spec

        return validate_sweep(state, principal, body)
    if body.kind is JobKind.TRAIN:
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
        name = body.name or train.model_name or f"{train.task}-{parent.name}"
    else:
        try:
            command = CommandSpec.model_validate(body.spec)
        except pydantic.ValidationError as exc:
            raise _pydantic_error(exc, "spec") from None
        resolved = {
            check_name(role, "spec.datasets"): _resolve_dataset(state, ws, ref, f"spec.datasets.{role}")
            for role, ref in command.datasets.items()
        }
        if command.code is not None and not state.store.blob_refs.owns(ws, command.code):
            raise ValidationError.field(
                "spec.code", "no such code archive in this workspace; upload it first"
            )
        _check_secrets(state, ws, command.secrets)
        spec = command.model_dump(mode="json")
        name = body.name or "command"
    spec["resolved_datasets"] = resolved
    return check_name(name, "name"), spec


class JobRuntime:
    """The control plane's side of running a job: launch and wrap-up."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def server_url(self) -> str:
        host = self.state.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.state.settings.port}"

    def launch(self, job: Job) -> LaunchRequest:
        """A run (the job's existing one on a restart), a fresh job token (revoking an earlier
        attempt's), and the LaunchRequest: the bootstrap on ``spec.workers`` workers."""
        store = self.state.store
        if job.run_id:  # a restart (job.attempt > 0): the run goes on
            run_id = job.run_id
            self._revoke_tokens(job)
        else:
            params = job.spec.get("params") or {}
            run_id = store.runs.create(
                workspace_id=job.workspace_id, job_id=job.id, name=job.name, params=params
            ).id
            store.jobs.update(job.id, run_id=run_id)
        token_id, token, secret_hash = mint_token()
        store.tokens.create(
            token_id=token_id,
            workspace_id=job.workspace_id,
            name=f"job-{job.id}",
            role=Role.MEMBER,
            secret_hash=secret_hash,
            scope=f"job:{job.id}",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
        env.update({k: str(v) for k, v in (job.spec.get("env") or {}).items()})
        for name in job.spec.get("secrets") or []:
            sealed = store.secrets.get(job.workspace_id, name).ciphertext
            env[name] = self.state.blobs.unseal(sealed, secret_aad(job.workspace_id, name)).decode()
        env.update(
            AICLOUD_URL=self.server_url(),
            AICLOUD_TOKEN=token,
            AICLOUD_JOB_ID=job.id,
            AICLOUD_RUN_ID=run_id,
            AICLOUD_JOB_SPEC=json.dumps({"kind": job.kind.value, "name": job.name, **job.spec}),
            AICLOUD_ATTEMPT=str(job.attempt),
            PYTHONUNBUFFERED="1",
            # `python` in a job's command is the interpreter aicloud runs on (its venv)
            PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)]),
        )
        return LaunchRequest(
            job_id=job.id,
            argv=[sys.executable, "-m", "aicloud.training.bootstrap"],
            env=env,
            cpus=int(job.spec.get("cpus") or 1),
            workers=int(job.spec.get("workers") or 1),
            gpus=int(job.spec.get("gpus") or 0),
            limits=WorkloadLimits.from_spec(job.spec.get("limits")),
        )

    def _revoke_tokens(self, job: Job) -> None:
        store = self.state.store
        for token in store.tokens.list(job.workspace_id):
            if token.scope == f"job:{job.id}":
                store.tokens.delete(job.workspace_id, token.id)
                self.state.principals.forget_token(token.id)

    def finished(self, job: Job) -> None:
        """Keep the log as an encrypted blob, revoke the job's token, close its run (with the
        job's status)."""
        store = self.state.store
        controller = self.state.jobs
        path = controller.executor.log_path(job.handle) if controller is not None and job.handle else None
        if path is not None and path.exists():
            with self.state.blobs.writer() as w, open(path, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    w.write(chunk)
                info = w.commit()
            # the job store references the log's blob (BlobOwner.JOB_LOG) in the same update
            self.state.keep_blob(info.digest, lambda: store.jobs.update(job.id, log_digest=info.digest))
            path.unlink(missing_ok=True)
        self._revoke_tokens(job)
        if job.run_id:
            # the run ends as the job did (a multi-worker or restarted job's rank 0 may have left
            # it open, or marked it cancelled when it was only stopped because a peer failed)
            run = store.runs.get(job.workspace_id, job.run_id)
            status = {JobStatus.SUCCEEDED: RunStatus.SUCCEEDED, JobStatus.CANCELLED: RunStatus.CANCELLED}
            wanted = status.get(job.status, RunStatus.FAILED)
            if run.status is not wanted:
                store.runs.finish(job.workspace_id, run.id, wanted)
