"""Deployments beyond HTTP: a spec checked against the workspace, and a new deployment made from it.
The API's ``POST``/``PUT``/``PATCH /deployments`` and the console's deploy form call these."""

from __future__ import annotations

from typing import Any

from aicloud.artifacts.runtimes import check_runtime
from aicloud.auth import Principal
from aicloud.entities.serving import Deployment
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.serving import DeploymentCreate, DeploymentSpec
from aicloud.server.services import traffic
from aicloud.server.services.edge_assignments import check_bundleable
from aicloud.server.services.models import resolve_model_ref
from aicloud.server.services.names import check_name
from aicloud.server.services.replicas import check_gpus
from aicloud.server.state import AppState

__all__ = ["create_deployment", "resolve_spec"]


def resolve_spec(
    state: AppState, principal: Principal, spec: DeploymentSpec
) -> tuple[dict[str, Any], str | None, dict[str, int] | None]:
    """A spec checked against the workspace (secrets, GPUs, the model and its runtime, the canary's
    versions, a Service's code): what to store, the model version's id and the traffic by version id;
    a 422 naming the field otherwise."""
    data = spec.model_dump(mode="json")
    if data.get("runtime") is None:  # unset: stored as before the field existed, so that a spec
        data.pop("runtime", None)  # stored then compares equal (no roll on a scaling change)
    if data.get("placement") is None:  # likewise: unset is not stored
        data.pop("placement", None)
    check_gpus(spec.gpus)
    existing = {s.name for s in state.store.secrets.list(principal.workspace.id)} if spec.secrets else set()
    missing = [n for n in spec.secrets if n not in existing]
    if missing:
        raise ValidationError.field(
            "secrets",
            f"no such secret(s): {', '.join(missing)}; create them with `aicloud secret create NAME`",
        )
    if spec.model is not None:
        try:
            version = resolve_model_ref(state, principal.workspace.id, spec.model)
        except NotFoundError as exc:
            raise ValidationError.field("model", exc.message) from None
        check_runtime(spec.runtime, version.config, version.files)  # a 422 naming runtime
        if spec.placement is not None:
            check_bundleable(version)  # a 422 naming placement
    if spec.service is not None and not state.store.blob_refs.owns(principal.workspace.id, spec.service.code):
        raise ValidationError.field("service.code", "no such code archive in this workspace; upload it first")
    if spec.model is not None:  # alone, or a service's self.model
        return data, version.id, traffic.resolve_traffic(state, principal.workspace.id, spec, version.id)
    return data, None, None


def create_deployment(state: AppState, principal: Principal, body: DeploymentCreate) -> Deployment:
    """Check ``body``, store the deployment ``pending`` and wake the controller; ConflictError when
    the name is taken in the workspace."""
    name = check_name(body.name)
    spec, version_id, weights = resolve_spec(state, principal, body)
    spec.pop("name", None)
    d = state.store.deployments.create(
        workspace_id=principal.workspace.id,
        name=name,
        spec=spec,
        model_version_id=version_id,
        desired=max(body.min_replicas, 1),
        traffic=weights,
    )
    state.wake_deployments()
    return d
