"""``/v1/endpoints/{name}/{path}`` as a raw ASGI app: no routing, validation or middleware per request.

:class:`EndpointApp` is what answers endpoint traffic. The control plane hands it every request
whose path starts with :data:`PREFIX` before FastAPI sees it (``ControlPlaneApp`` in
:mod:`aicloud.server.app`), and :func:`mount_endpoints` also lists it in the app's routes (a
Starlette ``Route``) so that the route walk in ``tests/unit/test_routes_auth.py`` finds its auth
decision (``EndpointApp.auth_decision``). One request, top to bottom:

1. The path names the endpoint; a method other than GET, POST or HEAD is 405, a path without
   ``{name}/`` 404 (as FastAPI's router would answer).
2. :func:`require_endpoint_caller` authenticates the bearer (through the app's ``PrincipalCache``,
   so the hot path does not touch the database) and finds the deployment's
   :class:`~aicloud.gateway.registry.Endpoint` in the caller's workspace. Any workspace token
   (role viewer or more: predicting is a read) may call any endpoint of its workspace; a token
   scoped ``endpoint:<name>`` may call only that endpoint; a replica's token
   (``deployment:<id>``) none. Other scopes (``job:``) act as their workspace's tokens, so a job
   can call an endpoint. An unknown name, or a name an endpoint token is not for, is 404 (the
   answer does not tell a scoped token which other endpoints exist).
3. :meth:`aicloud.gateway.proxy.Gateway.forward` forwards it to a replica and relays the answer.

Errors raised before the answer started leave in aicloud's error shape with their status, or, on
the Open Inference Protocol's paths (``/v1/endpoints/{name}/v2...``, see :func:`is_oip`), in the
protocol's ``{"error": "<message>"}`` that Triton and KServe clients parse; an unexpected one is
logged and answered 500 without a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from starlette.routing import Route

from aicloud.auth import PrincipalCache
from aicloud.entities import Role
from aicloud.errors import AicloudError, NotFoundError, PermissionDeniedError
from aicloud.gateway.proxy import Gateway
from aicloud.gateway.registry import Endpoint
from aicloud.gateway.request import ClientGone, read_headers
from aicloud.store import MetadataStore
from aicloud.wire.openai import error_body, param_of

log = logging.getLogger("aicloud.gateway")

#: Every path under this prefix is endpoint traffic.
PREFIX = "/v1/endpoints/"
ROUTE_PATH = "/v1/endpoints/{name}/{path:path}"
METHODS = frozenset({"GET", "POST", "HEAD"})

Scope = MutableMapping[str, Any]


class GatewayHost(Protocol):
    """What the gateway needs from the app state (``app.state.aicloud`` in the control plane)."""

    store: MetadataStore
    principals: PrincipalCache
    gateway: Gateway


async def require_endpoint_caller(host: GatewayHost, authorization: str | None, name: str) -> Endpoint:
    """The auth decision of endpoint routes: a workspace token, or a token for this endpoint."""
    principal = await host.principals.resolve(host.store, authorization)
    principal.require(Role.VIEWER)
    scope = principal.token.scope
    if scope is not None:
        if scope.startswith("endpoint:") and scope[9:] != name:
            raise NotFoundError.of("deployment", name)
        if scope.startswith("deployment:"):
            raise PermissionDeniedError("a replica token can only download its deployment's artifacts")
    endpoint = host.gateway.registry.get(principal.workspace.id, name)
    if endpoint is None:
        raise NotFoundError.of("deployment", name)
    return endpoint


require_endpoint_caller.__aicloud_auth__ = "endpoint"  # type: ignore[attr-defined]


def app_state(scope: Scope) -> GatewayHost:
    """The control plane's state, by the same convention as ``aicloud.server.deps.get_state``."""
    host: GatewayHost = scope["app"].state.aicloud
    return host


def is_openai(rest: str) -> bool:
    """Whether ``rest`` is an OpenAI API route (``v1/...``): the gateway's errors there are OpenAI's shape."""
    return rest == "v1" or rest.startswith("v1/")


def is_oip(rest: str) -> bool:
    """Whether ``rest`` (the path after ``/v1/endpoints/{name}/``) is an Open Inference Protocol route."""
    return rest == "v2" or rest.startswith("v2/")


async def send_error(
    send: Any,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    *,
    oip: bool = False,
    openai: bool = False,
) -> None:
    """aicloud's error shape, the Open Inference Protocol's ``{"error": message}`` with ``oip``, or
    OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with ``openai``."""
    if openai:
        body = error_body(status, message, param="model" if status == 404 else param_of(details))
    elif oip:
        body = json.dumps({"error": message}).encode()
    else:
        body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD, POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class EndpointApp:
    """The raw ASGI app of endpoint traffic; see the module docstring.

    ``host_of(scope)`` finds the :class:`GatewayHost` (default: ``scope["app"].state.aicloud``).
    """

    #: The auth decision every request goes through (checked by the route walk test).
    auth_decision = staticmethod(require_endpoint_caller)

    def __init__(self, host_of: Callable[[Scope], GatewayHost] = app_state) -> None:
        self.host_of = host_of

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"EndpointApp serves HTTP only, not {scope['type']!r}")
        path: str = scope["path"]
        name, sep, rest = path[len(PREFIX) :].partition("/")
        oip = is_oip(rest)
        openai = is_openai(rest)
        if not name or not sep or not path.startswith(PREFIX):
            await send_error(send, 404, "not_found", "no such route")
            return
        if scope["method"] not in METHODS:
            await send_error(send, 405, "method_not_allowed", "Method Not Allowed", oip=oip, openai=openai)
            return
        try:
            host = self.host_of(scope)
            incoming = read_headers(scope)
            endpoint = await require_endpoint_caller(host, incoming.authorization, name)
            await host.gateway.forward(endpoint, scope, receive, send, incoming)
        except ClientGone:
            return  # nobody to answer
        except AicloudError as exc:
            if exc.status_code >= 500:
                log.warning("%s %s: %s: %s", scope["method"], scope["path"], exc.code, exc.message)
            await send_error(
                send, exc.status_code, exc.code, exc.message, exc.details, oip=oip, openai=openai
            )
        except Exception:
            log.exception("endpoint request failed: %s %s", scope["method"], scope["path"])
            message = "internal server error; see the server log"
            await send_error(send, 500, "internal", message, oip=oip, openai=openai)


def mount_endpoints(router_owner: Any, app: EndpointApp | None = None) -> EndpointApp:
    """List ``app`` (a new :class:`EndpointApp` by default) in ``router_owner.router`` under
    :data:`ROUTE_PATH`, any method (the app answers 405 itself); returns it."""
    app = app or EndpointApp()
    route = Route(ROUTE_PATH, endpoint=app, name="endpoints", include_in_schema=False)
    router_owner.router.routes.append(route)
    return app


__all__ = [
    "METHODS",
    "PREFIX",
    "ROUTE_PATH",
    "EndpointApp",
    "GatewayHost",
    "app_state",
    "is_oip",
    "is_openai",
    "mount_endpoints",
    "require_endpoint_caller",
]
