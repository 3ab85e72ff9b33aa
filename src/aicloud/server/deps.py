"""FastAPI dependencies: the app state and the caller.

Every route depends on exactly one of :func:`public`, :data:`Viewer`, :data:`Member`
or :data:`Admin`; a test walks the app's routes and fails on a route without one, so a
new route cannot ship without an auth decision.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from aicloud.auth import Principal
from aicloud.entities import Role
from aicloud.errors import PermissionDeniedError
from aicloud.gateway.asgi import require_endpoint_caller
from aicloud.server.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.aicloud
    return state


State = Annotated[AppState, Depends(get_state)]


def public() -> None:
    """Marks a route as deliberately open (health checks only)."""


#: Routes a replica's token (scope ``deployment:<id>``) may call: it only fetches artifacts.
REPLICA_ROUTES = frozenset({"blobs_download", "whoami"})
#: Routes an edge node's token (scope ``edge-node:<name>``) may call: it pulls its bundles, reads
#: its assignments and reports its status.
EDGE_NODE_ROUTES = frozenset(
    {"edge_node_pull", "edge_node_assignments", "edge_node_status", "workspace_signing_key", "whoami"}
)

#: Routes a scrape token (scope ``metrics``) may call: Prometheus' scrapes and discovery.
METRICS_ROUTES = frozenset({"metrics_control_plane", "metrics_replica", "metrics_targets"})


def check_scope(principal: Principal, request: Request) -> None:
    """Scoped tokens reach only what their scope is for.

    ``endpoint:<name>`` tokens call one endpoint through the gateway and nothing under
    ``/api/v1``; ``deployment:<id>`` tokens (replicas) only download artifacts; ``edge-node:<name>``
    tokens only pull their node's bundles. ``job:<id>``
    tokens act as a member of the workspace, limited to their own job's runs and models
    (checked by those routes).
    """
    scope = principal.token.scope or ""
    route = request.scope.get("route")
    name = getattr(route, "name", "")
    if scope.startswith("endpoint:"):
        raise PermissionDeniedError(
            f"this token can only call the endpoint {scope[9:]!r} (/v1/endpoints/...)"
        )
    if scope.startswith("deployment:") and name not in REPLICA_ROUTES:
        raise PermissionDeniedError("a replica token can only download its deployment's artifacts")
    if scope == "metrics" and name not in METRICS_ROUTES:
        raise PermissionDeniedError("a scrape token (scope metrics) can only read metrics and scrape targets")
    if scope.startswith("edge-node:") and name not in EDGE_NODE_ROUTES:
        raise PermissionDeniedError("an edge node's token can only pull its bundles and sync its assignments")


def _require(role: Role):  # type: ignore[no-untyped-def]
    async def dependency(request: Request) -> Principal:
        state = get_state(request)
        header = request.headers.get("authorization")
        principal = await state.principals.resolve(state.store, header)
        principal.require(role)
        check_scope(principal, request)
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

AUTH_DEPENDENCIES = (public, require_viewer, require_member, require_admin, require_endpoint_caller)
