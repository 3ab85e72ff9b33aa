"""The workspace-level OpenAI API: ``/openai/v1/...``, where the body's ``model`` names the deployment.

    POST /openai/v1/embeddings          {"model": "<deployment>", ...}  → that deployment's /v1/embeddings
    POST /openai/v1/chat/completions    {"model": "<deployment>", ...}  → its /v1/chat/completions
    POST /openai/v1/completions         ...
    GET  /openai/v1/models              the workspace's deployments that speak the OpenAI API
    GET  /openai/v1/models/<deployment> one of them

Point an OpenAI client at ``<server>/openai/v1`` with an aicloud token as its API key. The control
plane hands every path under :data:`PREFIX` to :class:`OpenAIApp` (``ControlPlaneApp`` in
:mod:`aicloud.server.app`), as it hands ``/v1/endpoints/`` to the endpoint gateway:

1. The bearer is checked as for endpoint calls (:func:`aicloud.gateway.asgi.require_endpoint_caller`:
   any token of the workspace, role viewer or more; a token scoped ``endpoint:<name>`` reaches that
   deployment only; a replica's token none).
2. A POST's body is read (up to :data:`~aicloud.gateway.proxy.MAX_BODY_BYTES`), its ``model`` names
   a deployment of the caller's workspace (another workspace's is unknown here too: 404
   ``model_not_found``), and the request goes on as ``/v1/endpoints/<model>/v1/<rest>``
   (:meth:`aicloud.gateway.proxy.Gateway.forward`: balancing, cold-start hold, retry); the
   replica's answer passes through unchanged, a streamed one (server-sent events) as it comes.
3. ``GET /models`` asks every deployment of the workspace that has a ready replica for its
   ``GET /v1/models`` (at once, :data:`LIST_TIMEOUT_S` each) and lists those that answer in OpenAI's
   shape: text-embedding versions and generation Services. A deployment scaled to zero is not
   listed until a replica is up again (calling it by name starts one, as any endpoint call does),
   and listing does not count as traffic for its idle timer.

Errors here are OpenAI's shape (:mod:`aicloud.wire.openai`) with the status the aicloud error has
(400, 401, 403, 404, 413, 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from aicloud.entities import Role
from aicloud.errors import (
    AicloudError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from aicloud.gateway.asgi import GatewayHost, app_state, require_endpoint_caller
from aicloud.gateway.proxy import MAX_BODY_BYTES
from aicloud.gateway.registry import Endpoint
from aicloud.gateway.request import ClientGone, read_headers
from aicloud.wire.openai import error_body, param_of

log = logging.getLogger("aicloud.gateway")

PREFIX = "/openai/v1/"
ROUTE_PATH = "/openai/v1/{path:path}"
#: How long ``GET /models`` waits for each deployment's answer.
LIST_TIMEOUT_S = 5.0

Scope = MutableMapping[str, Any]


async def send_openai_error(send: Any, status: int, message: str, param: str | None = None) -> None:
    body = error_body(status, message, param=param)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_limited(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Callable[[], Any]:
    """An ASGI receive that yields ``body`` once, then the caller's own messages (its disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    return replay


def _endpoint_scope(scope: Scope, name: str, rest: str, body: bytes) -> Scope:
    """``scope`` as a call of ``/v1/endpoints/<name>/v1/<rest>`` with a buffered ``body``."""
    path = f"/v1/endpoints/{name}/v1/{rest}"
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"transfer-encoding")]
    if scope["method"] != "GET" or body:
        headers.append((b"content-length", b"%d" % len(body)))
    return {**scope, "path": path, "raw_path": path.encode(), "headers": headers}


class OpenAIApp:
    """The raw ASGI app of ``/openai/v1/...``; see the module docstring."""

    #: The auth decision every request goes through (the route walk test finds it).
    auth_decision = staticmethod(require_endpoint_caller)

    def __init__(self, host_of: Callable[[Scope], GatewayHost] = app_state) -> None:
        self.host_of = host_of

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"OpenAIApp serves HTTP only, not {scope['type']!r}")
        rest = scope["path"][len(PREFIX) :] if scope["path"].startswith(PREFIX) else ""
        method = scope["method"]
        try:
            host = self.host_of(scope)
            incoming = read_headers(scope)
            if rest == "models" or rest.startswith("models/"):
                if method not in ("GET", "HEAD"):
                    await send_openai_error(send, 405, f"{method} /openai/v1/{rest}: use GET")
                    return
                await self._models(host, incoming.authorization, rest[7:], send)
                return
            if method != "POST" or not rest:
                await send_openai_error(send, 404, f"no route {method} /openai/v1/{rest}")
                return
            if incoming.length > MAX_BODY_BYTES:
                raise PayloadTooLargeError(f"the request body is over the limit of {MAX_BODY_BYTES} bytes")
            principal_check = host.principals.resolve(host.store, incoming.authorization)
            (await principal_check).require(Role.VIEWER)  # 401/403 before the body is read
            body = await _read_limited(receive, MAX_BODY_BYTES)
            name = _model_of(body)
            endpoint = await _endpoint(host, incoming.authorization, name)
            inner = _endpoint_scope(scope, name, rest, body)
            await host.gateway.forward(endpoint, inner, _replay(body, receive), send, read_headers(inner))
        except ClientGone:
            return
        except AicloudError as exc:
            if exc.status_code >= 500:
                log.warning("%s %s: %s: %s", method, scope["path"], exc.code, exc.message)
            param = "model" if isinstance(exc, NotFoundError) else param_of(exc.details)
            await send_openai_error(send, exc.status_code, exc.message, param)
        except Exception:
            log.exception("OpenAI request failed: %s %s", method, scope["path"])
            await send_openai_error(send, 500, "internal server error; see the server log")

    async def _models(self, host: GatewayHost, authorization: str | None, one: str, send: Any) -> None:
        principal = await host.principals.resolve(host.store, authorization)
        principal.require(Role.VIEWER)
        scope = principal.token.scope
        if scope is not None and scope.startswith("deployment:"):
            raise PermissionDeniedError("a replica token can only download its deployment's artifacts")
        only = scope[9:] if scope is not None and scope.startswith("endpoint:") else None
        endpoints = [
            ep
            for ep in host.gateway.registry.all()
            if ep.workspace_id == principal.workspace.id
            and (only is None or ep.name == only)
            and (not one or ep.name == one)
            and ep.routable()
        ]
        found = await asyncio.gather(*(_models_of(host, ep) for ep in endpoints))
        data = sorted((m for models in found for m in models), key=lambda m: str(m.get("id")))
        if one:
            if not data:
                raise NotFoundError(
                    f"the model {one!r} does not exist, has no ready replica or does not speak OpenAI's API",
                    details=[{"field": "model"}],
                )
            doc: dict[str, Any] = data[0]
        else:
            doc = {"object": "list", "data": data}
        body = json.dumps(doc).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _model_of(body: bytes) -> str:
    """The body's ``model`` (the deployment's name), or a 400 naming ``model``."""
    try:
        doc = json.loads(body or b"null")
    except ValueError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}", details=[{"field": "body"}]) from None
    name = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequestError(
            "'model' is required: the name of a deployment of your workspace", details=[{"field": "model"}]
        )
    return name


async def _endpoint(host: GatewayHost, authorization: str | None, name: str) -> Endpoint:
    try:
        return await require_endpoint_caller(host, authorization, name)
    except NotFoundError:
        raise NotFoundError(
            f"the model {name!r} does not exist: 'model' names a deployment of your workspace "
            "(GET /openai/v1/models lists them)",
            details=[{"field": "model"}],
        ) from None


async def _models_of(host: GatewayHost, ep: Endpoint) -> list[dict[str, Any]]:
    """What one deployment's ``GET /v1/models`` lists (nothing when it does not answer in OpenAI's
    shape within :data:`LIST_TIMEOUT_S`); the deployment's idle timer is left as it was."""
    last = ep.last_request
    path = f"/v1/endpoints/{ep.name}/v1/models"
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"accept", b"application/json")],
    }
    status = 0
    chunks: list[bytes] = []
    never: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        return await asyncio.shield(never)

    async def collect(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await asyncio.wait_for(
            host.gateway.forward(ep, scope, receive, collect, read_headers(scope)), LIST_TIMEOUT_S
        )
        doc = json.loads(b"".join(chunks)) if status == 200 else None
    except Exception:  # not ready, not OpenAI, too slow: not listed
        doc = None
    finally:
        ep.last_request = last
        never.cancel()
    items = doc.get("data") if isinstance(doc, dict) and doc.get("object") == "list" else None
    if not isinstance(items, list):
        return []
    return [{**m, "id": ep.name} for m in items if isinstance(m, dict)][:1]


def mount_openai(router_owner: Any, app: OpenAIApp | None = None) -> OpenAIApp:
    """List ``app`` (a new :class:`OpenAIApp` by default) in ``router_owner.router`` under
    :data:`ROUTE_PATH` (the route walk finds its auth decision); returns it."""
    from starlette.routing import Route

    app = app or OpenAIApp()
    router_owner.router.routes.append(Route(ROUTE_PATH, endpoint=app, name="openai", include_in_schema=False))
    return app


__all__ = ["LIST_TIMEOUT_S", "PREFIX", "ROUTE_PATH", "OpenAIApp", "mount_openai", "send_openai_error"]
