"""Signing in and out: the token goes into an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request, Response

from aicloud.errors import PermissionDeniedError, UnauthenticatedError
from aicloud.server.console.render import ConsoleRoute, page, redirect
from aicloud.server.console.session import COOKIE, console_public, console_viewer, cookie_secure, verify

router = APIRouter(route_class=ConsoleRoute)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no ``//``): never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target if not urlsplit(target).netloc else "/"


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


@router.get("/signin", dependencies=[Depends(console_public)])
def signin_page(request: Request, next: str = "/", reason: str = "") -> Response:
    return page(request, "signin.html", next=_safe_next(next), reason=reason[:300], error="")


@router.post("/signin", dependencies=[Depends(console_public)])
async def signin(request: Request, token: str = Form(max_length=200), next: str = Form("/")) -> Response:
    """Verify the token like the API does; on success set the cookie and go where the user was going."""
    if not _same_origin(request):
        raise PermissionDeniedError("sign-in must come from this site's own sign-in page")
    token = token.strip()
    try:
        await verify(request, token)
    except UnauthenticatedError as exc:
        return page(
            request, "signin.html", status_code=401, next=_safe_next(next), reason="", error=exc.message
        )
    response = redirect(_safe_next(next))
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=cookie_secure(request), path="/"
    )
    return response


@router.post("/signout", dependencies=[Depends(console_viewer)])
def signout(request: Request) -> Response:
    response = redirect("/signin")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=cookie_secure(request))
    return response
