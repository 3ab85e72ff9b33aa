"""Deployments: desired serving state. The controller makes replicas; the gateway routes to them."""

from __future__ import annotations

import pydantic
from fastapi import APIRouter, Query, Response

from aicloud.auth import Principal, mint_token
from aicloud.controllers.edge_placement import is_edge
from aicloud.entities import Role
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.errors import ConflictError, NotFoundError, ValidationError
from aicloud.schemas import TokenCreated, TokenOut
from aicloud.schemas.serving import (
    DeploymentCreate,
    DeploymentMetricsOut,
    DeploymentOut,
    DeploymentPatch,
    DeploymentSpec,
    EndpointTokenCreate,
    PromoteRequest,
    ReplicaLogOut,
    ReplicaOut,
    ScalingSpec,
)
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._paging import DEFAULT_LIMIT, Limit, Offset, set_total
from aicloud.server.services import traffic
from aicloud.server.services.deployments import create_deployment, resolve_spec
from aicloud.server.services.names import check_name
from aicloud.server.state import AppState

router = APIRouter(tags=["deployments"])

#: Spec fields whose change keeps the running replicas: the controller's scaling, the canary's
#: weights, how long a start may take.
#: An edge placement's selector too: the controller moves replicas between nodes as it changes.
KEEP_REPLICAS = frozenset(ScalingSpec.model_fields) | {"traffic", "startup_timeout_s", "placement"}


#: The replica's log line naming the runtime serving the model and why (aicloud.serving.replica
#: prints it before it listens), and how much of the log's start is searched for it.
RUNTIME_LINE = "[aicloud replica] runtime: "
RUNTIME_LINE_WITHIN = 64 * 1024


def _runtime(state: AppState, r: Replica) -> str | None:
    """What the replica's log says serves its model (a ready replica of a model version)."""
    if state.deployments is None or r.state is not ReplicaState.READY or r.model_version_id is None:
        return None
    text, _ = state.deployments.replicas.read_log(r, 0, offset=0, limit=RUNTIME_LINE_WITHIN)
    for line in text.splitlines():
        if line.startswith(RUNTIME_LINE):
            return line[len(RUNTIME_LINE) :].strip()
    return None


def _out(state: AppState, d: Deployment) -> DeploymentOut:
    out = DeploymentOut.model_validate(d)
    replicas = state.store.deployments.replicas(d.id)
    # version numbers of what is served (a version deleted since: its number is unknown)
    ids = [d.model_version_id, *(d.traffic or {}), *(r.model_version_id for r in replicas)]
    numbers = traffic.version_numbers(state, d.workspace_id, ids)
    nodes = {n.id: n.name for n in state.store.edge_nodes.list(d.workspace_id)} if is_edge(d) else {}
    out.replicas = [
        ReplicaOut.model_validate(r).model_copy(
            update={
                "version": numbers.get(r.model_version_id or ""),
                "runtime": _runtime(state, r),
                "node": nodes.get(r.node_id) if r.node_id else None,
            }
        )
        for r in replicas
    ]
    # the configured public URL, never the request's Host header (the caller chooses that)
    out.url = f"{state.settings.resolved_public_url}/v1/endpoints/{d.name}"
    out.model_version = numbers.get(d.model_version_id or "")
    out.traffic = {str(numbers[v]): w for v, w in d.traffic.items() if v in numbers} if d.traffic else None
    return out


@router.post("/deployments", response_model=DeploymentOut, status_code=201)
def deployments_create(body: DeploymentCreate, principal: Member, state: State) -> DeploymentOut:
    """Serve a registered model (``model``) or your own Service class (``service``)."""
    return _out(state, create_deployment(state, principal, body))


@router.get("/deployments", response_model=list[DeploymentOut])
def deployments_list(
    principal: Viewer, state: State, response: Response, offset: Offset = 0, limit: Limit = DEFAULT_LIMIT
) -> list[DeploymentOut]:
    """Deployments, newest first, ``limit`` after ``offset``; ``X-Total-Count``: how many in all."""
    ws = principal.workspace.id
    set_total(response, state.store.deployments.count(ws))
    return [_out(state, d) for d in state.store.deployments.list(ws, offset=offset, limit=limit)]


@router.get("/deployments/{name}", response_model=DeploymentOut)
def deployments_get(name: str, principal: Viewer, state: State) -> DeploymentOut:
    return _out(state, state.store.deployments.get(principal.workspace.id, check_name(name)))


@router.patch("/deployments/{name}", response_model=DeploymentOut)
def deployments_update(name: str, body: DeploymentPatch, principal: Member, state: State) -> DeploymentOut:
    """Change any field of the spec (the rest keeps its value): scaling, canary ``traffic`` and
    ``startup_timeout_s`` keep the running replicas; another model version or replica setting rolls
    them over (zero failed requests)."""
    current = state.store.deployments.get(principal.workspace.id, check_name(name))
    if current.status is DeploymentStatus.DELETING:
        raise ConflictError(f"deployment {name!r} is being deleted")
    merged = {**current.spec, **body.model_dump(exclude_none=True)}
    try:
        spec = DeploymentSpec.model_validate(merged)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationError.field(".".join(str(p) for p in first["loc"]) or "body", first["msg"]) from None
    return _replace(state, principal, current, spec)


@router.put("/deployments/{name}", response_model=DeploymentOut)
def deployments_apply(
    name: str, body: DeploymentSpec, principal: Member, state: State, response: Response
) -> DeploymentOut:
    """Create or update the deployment to match ``body`` (a whole spec, as ``POST`` takes, without
    ``name``): 201 when it was created, 200 otherwise. Idempotent: the same spec again changes nothing;
    a changed model or replica setting rolls replicas over, a scaling change alone keeps them."""
    name = check_name(name)
    try:
        current = state.store.deployments.get(principal.workspace.id, name)
    except NotFoundError:
        response.status_code = 201
        return deployments_create(DeploymentCreate(name=name, **body.model_dump()), principal, state)
    if current.status is DeploymentStatus.DELETING:
        raise ConflictError(f"deployment {name!r} is being deleted; apply it again once it is gone")
    return _replace(state, principal, current, body)


def _replace(
    state: AppState, principal: Principal, current: Deployment, spec: DeploymentSpec
) -> DeploymentOut:
    """Give ``current`` the spec ``spec``; nothing changes when it is the same spec and version."""
    data, version_id, weights = resolve_spec(state, principal, spec)
    if bool(data.get("placement")) != bool(current.spec.get("placement")):
        raise ValidationError.field(
            "placement",
            "a deployment runs either here or on edge nodes; to move it, delete it and create it again",
        )
    if data == current.spec and version_id == current.model_version_id and weights == current.traffic:
        return _out(state, current)
    # scaling and traffic are the controller's alone: changing only them keeps the running replicas
    replica_side = {k: v for k, v in data.items() if k not in KEEP_REPLICAS}
    unchanged = {k: v for k, v in current.spec.items() if k not in KEEP_REPLICAS}
    roll = version_id != current.model_version_id or replica_side != unchanged
    d = state.store.deployments.update_spec(
        principal.workspace.id, current.name, data, version_id, roll=roll, traffic=weights
    )
    state.wake_deployments()
    return _out(state, d)


@router.post("/deployments/{name}/promote", response_model=DeploymentOut)
def deployments_promote(name: str, body: PromoteRequest, principal: Member, state: State) -> DeploymentOut:
    """End a canary by serving one of its versions alone (default: the canary). Its replicas keep
    running; the other version's are retired once enough are ready (no failed request)."""
    d = state.store.deployments.get(principal.workspace.id, check_name(name))
    d = traffic.promote(state, d, body.version)
    state.wake_deployments()
    return _out(state, d)


@router.post("/deployments/{name}/rollback", response_model=DeploymentOut)
def deployments_rollback(name: str, principal: Member, state: State) -> DeploymentOut:
    """End a canary by sending every request to the version the model names again."""
    d = traffic.rollback(state, state.store.deployments.get(principal.workspace.id, check_name(name)))
    state.wake_deployments()
    return _out(state, d)


@router.get("/deployments/{name}/metrics", response_model=DeploymentMetricsOut)
def deployments_metrics(name: str, principal: Viewer, state: State) -> DeploymentMetricsOut:
    """Per served version: weight and share, replicas, and the gateway's request count, error count
    and p50/p99 latency since the control plane started (``window``: the last 60 s, with the rate)."""
    return traffic.metrics(state, state.store.deployments.get(principal.workspace.id, check_name(name)))


@router.get("/deployments/{name}/logs", response_model=list[ReplicaLogOut])
def deployments_logs(
    name: str,
    principal: Viewer,
    state: State,
    replica: str | None = Query(
        default=None, max_length=128, description="one replica's id (default: every replica)"
    ),
    lines: int = Query(default=200, ge=1, le=100_000, description="lines from the end of each log"),
    offset: int | None = Query(
        default=None, ge=0, description="with replica: its whole lines from this byte offset instead"
    ),
) -> list[ReplicaLogOut]:
    """The end of each replica's log (stdout and stderr: the Service's prints and logging, the
    tracebacks of handlers that raised), newest replica first. Each answer's ``end`` is the offset
    to ask for next (with ``replica``) to follow that log."""
    if offset is not None and replica is None:
        raise ValidationError.field(
            "offset", "give replica too: an offset is a position in one replica's log"
        )
    d = state.store.deployments.get(principal.workspace.id, check_name(name))
    replicas = sorted(state.store.deployments.replicas(d.id), key=lambda r: r.created_at, reverse=True)
    if replica is not None:
        replicas = [r for r in replicas if r.id == replica]
        if not replicas:
            raise NotFoundError(
                f"deployment {d.name!r} has no replica {replica!r}; "
                f"`aicloud deploy show {d.name}` lists its replicas",
                details={"kind": "replica", "name": replica},
            )
    out = []
    for r in replicas:
        text, end = (
            ("", offset or 0)
            if state.deployments is None
            else state.deployments.replicas.read_log(r, lines, offset)
        )
        out.append(ReplicaLogOut(replica=r.id, state=r.state, generation=r.generation, log=text, end=end))
    return out


@router.delete("/deployments/{name}", status_code=204)
def deployments_delete(name: str, principal: Member, state: State) -> Response:
    """Drain and stop every replica, then remove the deployment."""
    d = state.store.deployments.get(principal.workspace.id, check_name(name))
    state.store.deployments.set_status(d.id, DeploymentStatus.DELETING)
    state.wake_deployments()
    return Response(status_code=204)


@router.post("/deployments/{name}/tokens", response_model=TokenCreated, status_code=201)
def deployments_create_token(
    name: str, body: EndpointTokenCreate, principal: Member, state: State
) -> TokenCreated:
    """A token that can only call this deployment's endpoint (``/v1/endpoints/{name}/...``)."""
    d = state.store.deployments.get(principal.workspace.id, check_name(name))
    token_id, token, secret_hash = mint_token()
    row = state.store.tokens.create(
        token_id=token_id,
        workspace_id=principal.workspace.id,
        name=check_name(body.name, "name"),
        role=Role.VIEWER,
        secret_hash=secret_hash,
        scope=f"endpoint:{d.name}",
    )
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)
