"""Every route of the app carries an auth decision, so a new route cannot ship open."""

from __future__ import annotations

import pytest
from fastapi import routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from aicloud.config import Settings
from aicloud.gateway.asgi import PREFIX, EndpointApp, require_endpoint_caller
from aicloud.server.app import create_app
from aicloud.server.console import STATIC_PREFIX
from aicloud.server.console.session import CONSOLE_AUTH_DEPENDENCIES, console_public
from aicloud.server.deps import AUTH_DEPENDENCIES, public, require_viewer

PUBLIC_PATHS = {"/healthz"}
DOCS_PATHS = {"/openapi.json", "/docs", "/redoc"}
#: The console's only open pages: signing in (its static files are a mount, checked below).
CONSOLE_PUBLIC_PATHS = {"/signin"}


def _calls(dep: Dependant) -> set[object]:
    found = {dep.call} if dep.call is not None else set()
    for sub in dep.dependencies:
        found |= _calls(sub)
    return found


def _decisions(app: object) -> dict[str, set[object]]:
    return {
        ctx.path: _calls(ctx.original_route.dependant) & set(AUTH_DEPENDENCIES)
        for ctx in routing.iter_route_contexts(app.routes)  # type: ignore[attr-defined]
        if isinstance(ctx.original_route, APIRoute)
    }


def test_every_route_has_an_auth_decision() -> None:
    app = create_app(Settings(public_api_docs=False))
    checked = 0
    for ctx in routing.iter_route_contexts(app.routes):  # flattens included routers
        route, path = ctx.original_route, ctx.path
        if isinstance(route, Mount):
            assert path == STATIC_PREFIX, f"unexpected mount {path}: only the console's static files are"
            continue
        if isinstance(route, APIRoute) and not path.startswith(
            ("/api/", "/mlflow/", "/healthz", "/metrics", "/docs", "/redoc", "/openapi")
        ):
            # a console page: exactly one of the console's cookie-based decisions
            decisions = _calls(route.dependant) & set(CONSOLE_AUTH_DEPENDENCIES)
            assert len(decisions) == 1, (
                f"console {sorted(route.methods)} {path} has auth decisions {decisions}"
            )
            assert not _calls(route.dependant) & set(AUTH_DEPENDENCIES), f"{path} mixes API and console auth"
            if console_public in decisions:
                assert path in CONSOLE_PUBLIC_PATHS, (
                    f"console page {path} is public but not on the allow-list"
                )
            checked += 1
            continue
        if not isinstance(route, APIRoute):
            # raw ASGI routes (endpoint traffic) declare the auth decision every request goes through
            decision = getattr(getattr(route, "endpoint", None), "auth_decision", None)
            assert decision is not None, f"unexpected non-API route {path} without an auth decision"
            assert decision in AUTH_DEPENDENCIES and decision is not public, f"{path}: {decision}"
            checked += 1
            continue
        decisions = _calls(route.dependant) & set(AUTH_DEPENDENCIES)
        assert len(decisions) == 1, f"{sorted(route.methods)} {path} has auth decisions {decisions}"
        if public in decisions:
            assert path in PUBLIC_PATHS, f"{path} is public but not on the allow-list"
        checked += 1
    assert checked >= 10


def test_api_docs_need_a_token_unless_made_public() -> None:
    """/docs, /redoc and /openapi.json answer any role's token; AICLOUD_PUBLIC_API_DOCS opens them."""
    closed = _decisions(create_app(Settings(public_api_docs=False)))
    assert all(closed[path] == {require_viewer} for path in DOCS_PATHS), closed
    opened = _decisions(create_app(Settings(public_api_docs=True)))
    assert {path for path, found in opened.items() if public in found} == PUBLIC_PATHS | DOCS_PATHS
    assert "/docs/oauth2-redirect" not in opened


def test_operation_ids_are_stable_names() -> None:
    spec = create_app().openapi()
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert "datasets_upload" in ids and "health" in ids
    assert all(i.replace("_", "").isalnum() for i in ids), ids


def test_endpoint_traffic_reaches_the_raw_app_with_its_auth_decision() -> None:
    """The control plane hands /v1/endpoints/... to the listed EndpointApp before any FastAPI routing."""
    app = create_app()
    raw = [r for r in app.routes if isinstance(r, Route) and isinstance(r.endpoint, EndpointApp)]
    assert len(raw) == 1 and raw[0].path.startswith(PREFIX)
    assert app.endpoint_app is raw[0].endpoint
    assert app.endpoint_app.auth_decision is require_endpoint_caller


def test_concurrent_requests_share_one_token_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """When a cached principal expires under load, the requests in flight wait for one database
    lookup instead of running one each; a bad token fails every waiter and is not cached."""
    import asyncio
    import time
    from types import SimpleNamespace

    from aicloud.auth import principals as auth
    from aicloud.errors import UnauthenticatedError

    calls: list[str] = []

    def fake_authenticate(store: object, header: str | None) -> object:
        calls.append(header or "")
        time.sleep(0.05)
        if header == "Bearer bad":
            raise UnauthenticatedError("invalid token")
        return SimpleNamespace(token=SimpleNamespace(expires_at=None, id="t"))

    monkeypatch.setattr(auth, "authenticate", fake_authenticate)
    cache = auth.PrincipalCache(ttl=60)

    async def main() -> None:
        got = await asyncio.gather(*(cache.resolve(None, "Bearer good") for _ in range(32)))  # type: ignore[arg-type]
        assert len({id(p) for p in got}) == 1
        bad = await asyncio.gather(
            *(cache.resolve(None, "Bearer bad") for _ in range(8)),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert all(isinstance(b, UnauthenticatedError) for b in bad)
        await cache.resolve(None, "Bearer good")  # type: ignore[arg-type]  # cached now

    asyncio.run(main())
    assert calls == ["Bearer good", "Bearer bad"]
    assert not cache._pending
