"""Admin pages: tokens, workspaces and secrets. A secret's value is never shown (only its name);
a new token is shown once, on the page that created it. Writes go through the API's own functions,
so their rules (unique names, role checks, cache invalidation) have one home."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request, Response
from starlette.concurrency import run_in_threadpool

from aicloud.entities import Role
from aicloud.schemas import SecretCreate, TokenCreate, WorkspaceCreate
from aicloud.server.bootstrap import DEFAULT_WORKSPACE
from aicloud.server.console.render import ConsoleRoute, page, redirect
from aicloud.server.console.session import Admin
from aicloud.server.deps import State
from aicloud.server.services.names import check_name
from aicloud.server.services.secrets import create_secret
from aicloud.server.services.tokens import create_token, create_workspace, revoke_token

router = APIRouter(route_class=ConsoleRoute)


@router.get("/admin/tokens")
async def tokens_page(request: Request, principal: Admin, state: State) -> Response:
    tokens = await run_in_threadpool(state.store.tokens.list, principal.workspace.id)
    return page(
        request,
        "admin_tokens.html",
        title="Tokens",
        tokens=tokens,
        roles=[r.value for r in Role],
        created=None,
    )


@router.post("/admin/tokens")
def tokens_new(
    request: Request,
    principal: Admin,
    state: State,
    name: str = Form(max_length=100),
    role: Role = Form(),
    expires_in_days: int | None = Form(default=None, ge=1, le=3650),
) -> Response:
    body = TokenCreate(name=name.strip(), role=role, expires_in_days=expires_in_days)
    created = create_token(state, principal.workspace.id, body)
    tokens = state.store.tokens.list(principal.workspace.id)
    return page(
        request,
        "admin_tokens.html",
        title="Tokens",
        tokens=tokens,
        roles=[r.value for r in Role],
        created=created,
    )


@router.post("/admin/tokens/{token_id}/delete")
def tokens_remove(request: Request, token_id: str, principal: Admin, state: State) -> Response:
    revoke_token(state, principal.workspace.id, token_id)
    return redirect("/admin/tokens", request)


@router.get("/admin/workspaces")
async def workspaces_page(request: Request, principal: Admin, state: State) -> Response:
    server_admin = principal.workspace.name == DEFAULT_WORKSPACE
    items = await run_in_threadpool(state.store.workspaces.list) if server_admin else [principal.workspace]
    return page(
        request,
        "admin_workspaces.html",
        title="Workspaces",
        workspaces=items,
        server_admin=server_admin,
        created=None,
    )


@router.post("/admin/workspaces")
def workspaces_new(
    request: Request, principal: Admin, state: State, name: str = Form(max_length=100)
) -> Response:
    created = create_workspace(state, principal, WorkspaceCreate(name=name.strip()).name)
    items = state.store.workspaces.list()
    return page(
        request,
        "admin_workspaces.html",
        title="Workspaces",
        workspaces=items,
        server_admin=True,
        created=created,
    )


@router.get("/admin/secrets")
async def secrets_page(request: Request, principal: Admin, state: State) -> Response:
    secrets = await run_in_threadpool(state.store.secrets.list, principal.workspace.id)
    return page(request, "admin_secrets.html", title="Secrets", secrets=secrets)


@router.post("/admin/secrets")
def secrets_new(
    request: Request,
    principal: Admin,
    state: State,
    name: str = Form(max_length=100),
    value: str = Form(max_length=65_536),
) -> Response:
    body = SecretCreate(name=name.strip(), value=value)
    create_secret(state, principal.workspace.id, body.name, body.value)
    return redirect("/admin/secrets", request)


@router.post("/admin/secrets/{name}/delete")
def secrets_remove(request: Request, name: str, principal: Admin, state: State) -> Response:
    state.store.secrets.delete(principal.workspace.id, check_name(name))
    return redirect("/admin/secrets", request)
