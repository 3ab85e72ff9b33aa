"""Models: the registry's list, a model's versions and aliases (move one with a form), the lineage
of a version (dataset → job → run → version → deployment) and a deploy form."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import ModelVersion
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.serving import DeploymentCreate
from aicloud.server.console import data
from aicloud.server.console.render import ConsoleRoute, page, redirect
from aicloud.server.console.session import Member, Viewer
from aicloud.server.deps import State
from aicloud.server.services.deployments import create_deployment
from aicloud.server.services.names import check_name
from aicloud.server.state import AppState

router = APIRouter(route_class=ConsoleRoute)
PAGE = data.PAGE


@router.get("/models")
async def models_list(
    request: Request, principal: Viewer, state: State, offset: int = Query(default=0, ge=0, le=1_000_000)
) -> Response:
    models = await run_in_threadpool(data.models_page, state.store, principal.workspace.id, offset=offset)
    return page(request, "models.html", title="Models", models=models.items, **models.pager())


def _lineage(state: AppState, workspace_id: str, version: ModelVersion) -> list[dict[str, Any]]:
    """The chain that made ``version`` and what serves it, as nodes left to right."""
    lineage = version.lineage or {}
    nodes: list[dict[str, Any]] = []
    datasets = lineage.get("datasets") or []
    nodes.append(
        {
            "kind": "dataset",
            "items": [
                {
                    "label": f"{d.get('name')}:{d.get('version')}",
                    "href": f"/datasets/{d.get('name')}?version={d.get('version')}",
                }
                for d in datasets
            ],
        }
    )
    job_id, run_id = lineage.get("job_id"), lineage.get("run_id")
    job_label = lineage.get("job_name") or job_id
    nodes.append(
        {"kind": "job", "items": [{"label": job_label, "href": f"/jobs/{job_id}"}] if job_id else []}
    )
    nodes.append({"kind": "run", "items": [{"label": run_id, "href": f"/runs/{run_id}"}] if run_id else []})
    nodes.append(
        {"kind": "model version", "items": [{"label": f"{version.name}:{version.version}", "href": ""}]}
    )
    serving = state.store.deployments.list(workspace_id, model_version_id=version.id, limit=50)
    nodes.append(
        {
            "kind": "deployment",
            "items": [{"label": d.name, "href": f"/deployments/{d.name}"} for d in serving],
        }
    )
    return nodes


@router.get("/models/{name}")
async def model_page(
    request: Request,
    name: str,
    principal: Viewer,
    state: State,
    version: int | None = Query(default=None, ge=1),
) -> Response:
    ws = principal.workspace.id
    model = await run_in_threadpool(state.store.models.get_model, ws, check_name(name))
    versions = await run_in_threadpool(
        lambda: state.store.models.list_versions(ws, name, limit=PAGE + 1, newest_first=True)
    )
    if not versions:
        raise NotFoundError.of("model", name)
    chosen = next((v for v in versions if v.version == version), None) if version else versions[0]
    if chosen is None:  # an older version than the page shows, or the 404
        chosen = await run_in_threadpool(state.store.models.get_version, ws, name, version)
    return page(
        request,
        "model.html",
        title=name,
        name=name,
        versions=versions[:PAGE],
        more_versions=len(versions) > PAGE,
        v=chosen,
        aliases=model.aliases,
        lineage=await run_in_threadpool(_lineage, state, ws, chosen),
    )


@router.post("/models/{name}/aliases")
def model_move_alias(
    request: Request,
    name: str,
    principal: Member,
    state: State,
    alias: str = Form(max_length=100),
    version: int = Form(ge=1),
) -> Response:
    """Point ``alias`` at ``version`` (it moves from any other version at once; deployments of
    ``name@alias`` roll to it)."""
    alias = alias.strip()
    if (alias.isascii() and alias.isdigit()) or alias == "latest":
        raise ValidationError.field("alias", f"{alias!r} would be read as a version; pick a name")
    state.store.models.set_alias(
        principal.workspace.id, check_name(name), check_name(alias, "alias"), version
    )
    state.wake_deployments()
    return redirect(f"/models/{name}?version={version}", request)


@router.post("/models/{name}/deploy")
def model_deploy(
    request: Request,
    name: str,
    principal: Member,
    state: State,
    deployment: str = Form(max_length=100),
    ref: str = Form(max_length=200, description="the version or alias to serve"),
) -> Response:
    """Deploy a version (or an alias, which the deployment then tracks), as ``POST /deployments`` does."""
    check_name(name)
    sep = "@" if not ref.isdigit() else ":"
    body = DeploymentCreate(name=deployment.strip(), model=f"{name}{sep}{ref}")
    d = create_deployment(state, principal, body)
    return redirect(f"/deployments/{d.name}", request)
