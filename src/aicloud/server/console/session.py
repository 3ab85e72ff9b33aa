"""The console's sign-in: a token in a cookie, CSRF tokens, and each route's auth decision.

The cookie holds the user's own aicloud token (``aic_...``), HttpOnly (no script reads it),
SameSite=Strict and Secure when the request came over https. Every request verifies it exactly
as the API verifies a bearer header (:class:`aicloud.auth.PrincipalCache`), so an expired or
revoked token signs the user out at the next page.

A state-changing request also carries a CSRF token: the HMAC-SHA256 of the cookie's token under a
fixed label, sent as the hidden ``csrf`` field of a form or the ``X-CSRF-Token`` header of an
htmx or XHR request. Another site can neither read the cookie nor compute it.

Each console route depends on exactly one of :func:`console_public`, :func:`console_viewer`,
:func:`console_member` or :func:`console_admin` (``tests/unit/test_routes_auth.py`` checks).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request

from aicloud.auth import Principal, parse_token
from aicloud.entities import Role
from aicloud.errors import PermissionDeniedError, UnauthenticatedError
from aicloud.server.deps import get_state

COOKIE = "aicloud_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
_CSRF_LABEL = b"aicloud-console-csrf-v1"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInNeeded(Exception):
    """No valid console cookie: the user goes to the sign-in page (``reason`` says why)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRefused(PermissionDeniedError):
    """A state-changing request without the CSRF token of its session."""


def csrf_token(token: str) -> str:
    """The CSRF token of a session: derived from its cookie value, never stored."""
    return hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_matches(token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(token), str(sent))


def cookie_secure(request: Request) -> bool:
    """Secure when the page was reached over https (directly or behind a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def sign_in_url(request: Request, reason: str = "") -> str:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    url = "/signin?next=" + quote(target, safe="")
    return url + ("&reason=" + quote(reason, safe="") if reason else "")


async def verify(request: Request, token: str) -> Principal:
    """The principal of a console token, or :class:`UnauthenticatedError`. Scoped tokens (a job's,
    a replica's, an endpoint's) are for machines, not for signing in."""
    if parse_token(token) is None:
        raise UnauthenticatedError("that is not an aicloud token (aic_...)")
    state = get_state(request)
    principal = await state.principals.resolve(state.store, f"Bearer {token}")
    if principal.token.scope:
        raise UnauthenticatedError("this token is scoped to one job or endpoint; sign in with a user token")
    return principal


async def _session(request: Request) -> tuple[Principal, str]:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInNeeded()
    try:
        principal = await verify(request, token)
    except UnauthenticatedError as exc:
        raise SignInNeeded(exc.message) from None
    request.state.principal = principal
    request.state.console_token = token
    return principal, token


async def _check_csrf(request: Request, token: str) -> None:
    """Header first (htmx, XHR uploads); then the form field of an url-encoded or multipart form.
    Multipart bodies (uploads) must send the header: reading their form here would consume them."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not csrf_matches(token, sent):
        raise CsrfRefused("this form is missing its security token (CSRF); reload the page and try again")


def _require(role: Role):  # type: ignore[no-untyped-def]
    async def dependency(request: Request) -> Principal:
        principal, token = await _session(request)
        if request.method not in SAFE_METHODS:
            await _check_csrf(request, token)
        principal.require(role)
        return principal

    dependency.__name__ = f"console_{role.value}"
    return dependency


def console_public() -> None:
    """Marks a console route open to anyone: the sign-in page only."""


console_viewer = _require(Role.VIEWER)
console_member = _require(Role.MEMBER)
console_admin = _require(Role.ADMIN)

CONSOLE_AUTH_DEPENDENCIES = (console_public, console_viewer, console_member, console_admin)

Viewer = Annotated[Principal, Depends(console_viewer)]
Member = Annotated[Principal, Depends(console_member)]
Admin = Annotated[Principal, Depends(console_admin)]
