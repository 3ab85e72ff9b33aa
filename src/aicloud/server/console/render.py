"""Rendering console pages: the Jinja2 environment (autoescaped), the page context, error pages,
and :class:`ConsoleRoute`, the route class that turns any error of a console route into a page.

Console routes answer HTML, never the API's error JSON: a missing object (or another workspace's)
is a 404 page, a refused action a 403 page, a missing or expired sign-in a redirect to ``/signin``
(or, for an htmx request, an ``HX-Redirect`` there).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pydantic
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from aicloud import __version__
from aicloud.auth import Principal
from aicloud.entities import Role
from aicloud.errors import AicloudError
from aicloud.server.console.session import CSRF_FIELD, CSRF_HEADER, SignInNeeded, csrf_token, sign_in_url

log = logging.getLogger("aicloud.console")
HERE = Path(__file__).parent
STATIC = HERE / "static"

#: Scripts only from this origin (no inline script: page data travels in JSON blocks), no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = (datetime.now(UTC) - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(int(seconds), 0)}s ago"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e12):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _size(value: int | None) -> str:
    n = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = int(((end or datetime.now(UTC)) - start).total_seconds())
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _qs(request: Request, **changes: Any) -> str:
    """The current query string with ``changes`` (a None value drops the key); repeated keys kept."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    for key, value in changes.items():
        if value is None:
            continue
        items.extend((key, str(v)) for v in value) if isinstance(value, list) else items.append(
            (key, str(value))
        )
    return urlencode(items)


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(ago=_ago, when=_when, num=_num, size=_size)
ENV.globals.update(
    qs=_qs, duration=_duration, version=__version__, csrf_field=CSRF_FIELD, csrf_header=CSRF_HEADER
)


def context(request: Request) -> dict[str, Any]:
    """What every page's layout needs: who is signed in, what they may do, the CSRF token."""
    principal: Principal | None = getattr(request.state, "principal", None)
    token: str | None = getattr(request.state, "console_token", None)
    return {
        "request": request,
        "path": request.url.path,
        "principal": principal,
        "can_write": principal is not None and principal.role.allows(Role.MEMBER),
        "is_admin": principal is not None and principal.role.allows(Role.ADMIN),
        "csrf": csrf_token(token) if token else "",
    }


def page(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """Render ``template`` with the layout's context and ``values``."""
    html = ENV.get_template(template).render(**context(request), **values)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 413: "Too large", 422: "Invalid input"}
    title = titles.get(status_code, "Bad request" if status_code < 500 else "Server error")
    return page(
        request, "error.html", status_code=status_code, title=title, message=message, code=status_code
    )


#: Addresses that answer the API's JSON errors, never a console page.
NOT_PAGES = ("/api/", "/v1/", "/mlflow", "/static/", "/healthz", "/openapi.json", "/docs", "/redoc")


def wants_page(request: Request) -> bool:
    """Whether a browser navigates here (GET for HTML, outside the API): a 404 is then a page."""
    return (
        request.method in ("GET", "HEAD")
        and not request.url.path.startswith(NOT_PAGES)
        and "text/html" in request.headers.get("accept", "")
    )


def not_found_page(request: Request) -> HTMLResponse:
    """The console's 404 page for an address nothing serves (no sign-in is looked at)."""
    return error_page(request, 404, f"there is no page at {request.url.path[:200]}")


def redirect(url: str, request: Request | None = None) -> Response:
    """A 303 to ``url``; for an htmx request an ``HX-Redirect`` (htmx follows it as a page load)."""
    if request is not None and request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _validation_message(exc: RequestValidationError | pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{field or 'input'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid input"


class ConsoleRoute(APIRoute):
    """An APIRoute whose errors are console pages instead of the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded as exc:
                if request.headers.get("accept", "").startswith("text/event-stream"):
                    return Response(status_code=401)
                return redirect(sign_in_url(request, exc.reason), request)
            except AicloudError as exc:
                if exc.status_code >= 500:
                    log.error("%s: %s", exc.code, exc.message)
                return error_page(request, exc.status_code, exc.message)
            except (RequestValidationError, pydantic.ValidationError) as exc:
                return error_page(request, 422, _validation_message(exc))
            except StarletteHTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail))

        return console_handler
