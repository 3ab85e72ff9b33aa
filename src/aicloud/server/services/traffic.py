"""Canary traffic: which versions of its model a deployment serves and with what weights, how a
canary ends (promote one version, or roll back to the one the model names), and each version's
share, replicas and request statistics.

The spec keeps what the user wrote (``traffic: {"3": 90, "4": 10}``, version numbers); the
deployment row keeps the versions' ids (``Deployment.traffic``), which the controller and the
gateway use. Neither a traffic change nor its end bumps the generation: the replicas of a version
that stays served keep running, so promoting a canary keeps the canary's warm replicas and only
retires the others once enough are ready (no failed request).
"""

from __future__ import annotations

import contextlib
from typing import Any

from aicloud.entities.serving import Deployment, DeploymentStatus, ReplicaState
from aicloud.errors import ConflictError, NotFoundError, ValidationError
from aicloud.schemas.serving import DeploymentMetricsOut, DeploymentSpec, MinuteOut, TrafficOut
from aicloud.server.services.models import resolve_model_ref
from aicloud.server.state import AppState

__all__ = ["metrics", "promote", "resolve_traffic", "rollback", "version_numbers"]


def model_name(ref: str) -> str:
    """The model's name in a reference (``name``, ``name:3``, ``name@alias``)."""
    return ref.split("@", 1)[0].partition(":")[0]


def resolve_traffic(
    state: AppState, workspace_id: str, spec: DeploymentSpec, version_id: str | None
) -> dict[str, int] | None:
    """The spec's traffic by version id; a 422 naming ``traffic`` for a version that does not
    exist or when the version ``model`` names is not among them."""
    if not spec.traffic or spec.model is None:
        return None
    name = model_name(spec.model)
    out: dict[str, int] = {}
    for number, weight in spec.traffic.items():
        try:
            out[resolve_model_ref(state, workspace_id, f"{name}:{number}").id] = weight
        except NotFoundError:
            raise ValidationError.field("traffic", f"model {name!r} has no version {number}") from None
    if version_id not in out:
        raise ValidationError.field(
            "traffic",
            f"traffic must name the version that model {spec.model!r} serves (and give it a weight, "
            "0 to send it nothing); add it, or point model at one of the versions named",
        )
    return out


def version_numbers(state: AppState, workspace_id: str, ids: Any) -> dict[str, int]:
    """Version id → number for the ids that still exist."""
    out: dict[str, int] = {}
    for version_id in ids:
        if version_id and version_id not in out:
            with contextlib.suppress(NotFoundError):
                out[version_id] = state.store.models.get_version_by_id(workspace_id, version_id).version
    return out


def _canary(d: Deployment) -> dict[str, int]:
    if d.status is DeploymentStatus.DELETING:
        raise ConflictError(f"deployment {d.name!r} is being deleted")
    if not d.traffic:
        raise ConflictError(
            f"deployment {d.name!r} serves one version and has no canary; start one with "
            f"`aicloud deploy update {d.name} --traffic OLD=90,NEW=10`",
            details={"deployment": d.name},
        )
    return d.traffic


def promote(state: AppState, d: Deployment, version: int | None) -> Deployment:
    """Serve ``version`` (default: the canary, the served version with the most weight other than
    the one the model names) alone. A deployment of ``name@alias`` that tracks its alias moves
    the alias there (the registry says what ``production`` is); any other gets ``model: name:N``."""
    traffic = _canary(d)
    numbers = version_numbers(state, d.workspace_id, traffic)
    if version is None:
        others = sorted(
            (w, numbers.get(v, 0), v) for v, w in traffic.items() if v != d.model_version_id and v in numbers
        )
        if not others:
            raise ValidationError.field(
                "version", "the canary names one version only; give the version to keep"
            )
        chosen = others[-1][2]
    else:
        chosen = next((v for v, n in numbers.items() if n == version), "")
        if not chosen:
            served = ", ".join(str(n) for n in sorted(numbers.values()))
            raise ValidationError.field("version", f"version {version} is not in the traffic ({served})")
    ref = str(d.spec.get("model") or "")
    spec = {**d.spec, "traffic": None}
    if "@" in ref and d.spec.get("track_alias") is not False:
        name, alias = ref.split("@", 1)
        state.store.models.set_alias(d.workspace_id, name, alias, numbers[chosen])
    else:
        spec["model"] = f"{model_name(ref)}:{numbers[chosen]}"
    return state.store.deployments.update_spec(d.workspace_id, d.name, spec, chosen, roll=False, traffic=None)


def rollback(state: AppState, d: Deployment) -> Deployment:
    """End the canary: the version the model names takes every request again."""
    _canary(d)
    spec = {**d.spec, "traffic": None}
    return state.store.deployments.update_spec(
        d.workspace_id, d.name, spec, d.model_version_id, roll=False, traffic=None
    )


def metrics(state: AppState, d: Deployment) -> DeploymentMetricsOut:
    """Each served version's weight, share, replicas and the gateway's statistics of its calls
    (versions no longer served but with replicas or statistics follow, weight 0)."""
    served = d.versions()
    total = sum(served.values())
    ep = state.endpoints.by_deployment(d.id)
    stats = ep.stats.snapshot() if ep is not None else {}
    edge = ep.stats.edge_snapshot() if ep is not None else {}
    replicas = [
        r
        for r in state.store.deployments.replicas(d.id)
        if r.state in (ReplicaState.STARTING, ReplicaState.READY)
    ]
    versions: list[str | None] = list(served)
    for extra in [r.model_version_id for r in replicas] + [v or None for v in stats]:
        if extra not in versions:
            versions.append(extra)
    numbers = version_numbers(state, d.workspace_id, versions)
    out = []
    for v in versions:
        weight = served.get(v, 0)
        mine = [r for r in replicas if (r.model_version_id or None) == v]
        numbers_of = stats.get(v or "", {})
        out.append(
            TrafficOut(
                version=numbers.get(v) if v else None,
                model_version_id=v,
                weight=weight,
                percent=round(100 * weight / total, 2) if total else 0.0,
                replicas=len(mine),
                ready=sum(1 for r in mine if r.state == ReplicaState.READY),
                requests=numbers_of.get("requests", 0),
                errors=numbers_of.get("errors", 0),
                p50_ms=numbers_of.get("p50_ms"),
                p99_ms=numbers_of.get("p99_ms"),
                window=numbers_of.get("window", {}),
                edge=edge.get(v or "", {}),
            )
        )
    history = [MinuteOut(**row) for row in ep.stats.history()] if ep is not None else []
    return DeploymentMetricsOut(deployment=d.name, versions=out, history=history)
