"""FastAPI dependencies: the app state and the caller.

Every route depends on exactly one of :func:`public`, :data:`Viewer`, :data:`Member`
or :data:`Admin`; a test walks the app's routes and fails on a route without one, so a
new route cannot ship without an auth decision.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from aicloud.entities import Role
from aicloud.server.auth import Principal, authenticate
from aicloud.server.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.aicloud
    return state


State = Annotated[AppState, Depends(get_state)]


def public() -> None:
    """Marks a route as deliberately open (health checks only)."""


def _require(role: Role):  # type: ignore[no-untyped-def]
    async def dependency(request: Request) -> Principal:
        state = get_state(request)
        header = request.headers.get("authorization")
        principal = state.principals.get(header) if header else None
        if principal is None:
            principal = await run_in_threadpool(authenticate, state.store, header)
            state.principals.put(header or "", principal)
        principal.require(role)
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{role.value}"
    dependency.__aicloud_auth__ = role  # type: ignore[attr-defined]
    return dependency


require_viewer = _require(Role.VIEWER)
require_member = _require(Role.MEMBER)
require_admin = _require(Role.ADMIN)

Viewer = Annotated[Principal, Depends(require_viewer)]
Member = Annotated[Principal, Depends(require_member)]
Admin = Annotated[Principal, Depends(require_admin)]
AUTH_DEPENDENCIES = (public, require_viewer, require_member, require_admin)
