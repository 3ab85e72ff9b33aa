"""Deployments: status, replicas, the version served, logs, and a playground that sends a request
to the endpoint (in-process, through the gateway, with the signed-in token) and shows the matching
curl and Python."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import httpx
from fastapi import APIRouter, Form, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import ModelVersion
from aicloud.entities.serving import Deployment
from aicloud.errors import NotFoundError, ValidationError
from aicloud.server.console import data
from aicloud.server.console.render import ConsoleRoute, page
from aicloud.server.console.session import Member, Viewer
from aicloud.server.deps import State
from aicloud.server.services import traffic
from aicloud.server.services.names import check_name
from aicloud.server.state import AppState

router = APIRouter(route_class=ConsoleRoute)
LOG_LINES = 200
PLAYGROUND_TIMEOUT_S = 60.0


@router.get("/deployments")
async def deployments_list(
    request: Request, principal: Viewer, state: State, offset: int = Query(default=0, ge=0, le=1_000_000)
) -> Response:
    found = await run_in_threadpool(data.deployments_page, state.store, principal.workspace.id, offset=offset)
    return page(request, "deployments.html", title="Deployments", deployments=found.items, **found.pager())


def _version(state: AppState, d: Deployment) -> ModelVersion | None:
    if d.model_version_id is None:
        return None
    with contextlib.suppress(NotFoundError):  # a version deleted since
        return state.store.models.get_version_by_id(d.workspace_id, d.model_version_id)
    return None


def _example(version: ModelVersion | None) -> str:
    """A request body the endpoint takes: a row of zeros, one per input of the model's signature."""
    if version is None:
        return "{}"
    inputs = version.signature.get("inputs") or [{}]
    return json.dumps({"inputs": [[0.0] * len(inputs)]})


def _view(state: AppState, workspace_id: str, name: str) -> dict[str, Any]:
    d = state.store.deployments.get(workspace_id, check_name(name))
    replicas = sorted(state.store.deployments.replicas(d.id), key=lambda r: r.created_at, reverse=True)
    logs = []
    if state.deployments is not None:
        for r in replicas[:4]:
            text, _ = state.deployments.replicas.read_log(r, LOG_LINES, None)
            logs.append({"replica": r, "text": text})
    version = _version(state, d)
    if version is not None:
        served = f"{version.name}:{version.version}"
    else:
        served = (
            d.model_version_id or "a Service (" + str((d.spec.get("service") or {}).get("entrypoint")) + ")"
        )
    placement = d.spec.get("placement") or {}
    nodes = {n.id: n.name for n in state.store.edge_nodes.list(workspace_id)} if placement else {}
    placed = ", ".join(f"{k}={v}" for k, v in sorted((placement.get("edge") or {}).items())) or "any node"
    return {
        "d": d,
        "replicas": replicas,
        "served": served,
        "logs": logs,
        "example": _example(version),
        "nodes": nodes,
        "placed": f"edge nodes: {placed}" if placement else "",
    }


@router.get("/deployments/{name}")
async def deployment_page(request: Request, name: str, principal: Viewer, state: State) -> Response:
    view = await run_in_threadpool(_view, state, principal.workspace.id, name)
    base = state.settings.resolved_public_url
    return page(
        request,
        "deployment.html",
        title=name,
        url=f"{base}/v1/endpoints/{view['d'].name}",
        **view,
    )


@router.get("/deployments/{name}/traffic")
async def deployment_traffic(request: Request, name: str, principal: Viewer, state: State) -> Response:
    """An htmx fragment the deployment page polls: per served version, its share, replicas and the
    gateway's counts and latencies (since start and over the last minute), one sample for the
    page's request-rate, latency and replica charts, and the last hour by minute they start from."""
    d = await run_in_threadpool(state.store.deployments.get, principal.workspace.id, check_name(name))
    out = await run_in_threadpool(traffic.metrics, state, d)
    windows = [v.window for v in out.versions if v.window]
    sample = {
        "t": time.time(),
        "rate": sum(w.get("rate_per_s") or 0.0 for w in windows),
        "p50": max((w.get("p50_ms") or 0.0 for w in windows), default=0.0),
        "p99": max((w.get("p99_ms") or 0.0 for w in windows), default=0.0),
        "replicas": sum(v.ready for v in out.versions),
    }
    history = [
        {"t": m.t, "rate": m.rate_per_s, "p50": m.p50_ms or 0.0, "p99": m.p99_ms or 0.0, "replicas": m.ready}
        for m in out.history
    ]
    return page(request, "_traffic.html", versions=out.versions, sample=sample, history=history)


def _snippets(url: str, path: str, body: str) -> dict[str, Any]:
    target = f"{url}/{path}"
    quoted = body.replace("'", "'\\''")
    curl = (
        f'curl -s {target} \\\n  -H "Authorization: Bearer $AICLOUD_TOKEN" \\\n'
        f"  -H 'Content-Type: application/json' \\\n  -d '{quoted}'"
    )
    python = (
        "import os, httpx\n\n"
        f"response = httpx.post(\n    {target!r},\n"
        '    headers={"Authorization": f"Bearer {os.environ[\'AICLOUD_TOKEN\']}"},\n'
        f"    json={body},\n    timeout=60,\n)\nprint(response.json())"
    )
    return {"curl": curl, "python": python}


@router.post("/deployments/{name}/playground")
async def deployment_playground(
    request: Request,
    name: str,
    principal: Member,
    state: State,
    path: str = Form(default="predict", max_length=200, pattern=r"^[A-Za-z0-9_./-]*$"),
    body: str = Form(default="{}", max_length=1_000_000),
) -> Response:
    """Send ``body`` to the endpoint through the gateway, in this process, as the signed-in user
    (endpoint auth and routing are exactly what ``curl`` gets); answer an htmx fragment."""
    d = await run_in_threadpool(state.store.deployments.get, principal.workspace.id, check_name(name))
    if ".." in path.split("/"):
        raise ValidationError.field("path", "a path inside the endpoint, such as predict")
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValidationError.field("body", f"not JSON: {exc.msg} at line {exc.lineno}") from None
    token = request.state.console_token
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://console", timeout=PLAYGROUND_TIMEOUT_S
    ) as client:
        answer = await client.post(
            f"/v1/endpoints/{d.name}/{path.lstrip('/')}",
            json=payload,
            headers={"Authorization": f"Bearer {token}"},
        )
    try:
        shown = json.dumps(answer.json(), indent=2)
    except ValueError:
        shown = answer.text
    url = f"{state.settings.resolved_public_url}/v1/endpoints/{d.name}"
    pretty = json.dumps(payload)
    return page(
        request,
        "_playground.html",
        status=answer.status_code,
        answer=shown[:200_000],
        seconds=answer.elapsed.total_seconds() if answer.elapsed else None,
        **_snippets(url, path.lstrip("/"), pretty),
    )
