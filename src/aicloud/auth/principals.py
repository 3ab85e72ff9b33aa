"""Who is calling: principals, the verification of a bearer header, and the verified-token cache.

:func:`authenticate` resolves an ``Authorization: Bearer aic_<id>_<secret>`` header to a
:class:`Principal` (the token's workspace and role) through a :class:`TokenDirectory`;
:class:`PrincipalCache` keeps recent answers so hot paths (every API route, every endpoint call
through the gateway) do not hit the database per request.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import anyio.to_thread

from aicloud.auth.tokens import parse_token, secret_matches
from aicloud.cache import TTLCache
from aicloud.entities import Role, Token, Workspace
from aicloud.errors import PermissionDeniedError, UnauthenticatedError


class _Tokens(Protocol):
    def get(self, token_id: str) -> Token | None: ...


class _Workspaces(Protocol):
    def get(self, workspace_id: str) -> Workspace: ...


class TokenDirectory(Protocol):
    """What authentication reads: tokens and workspaces by id (the metadata store is one)."""

    @property
    def tokens(self) -> _Tokens: ...

    @property
    def workspaces(self) -> _Workspaces: ...


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's workspace and role."""

    workspace: Workspace
    token: Token

    @property
    def role(self) -> Role:
        return self.token.role

    @property
    def job_id(self) -> str | None:
        """The job a job-scoped token belongs to (``scope = "job:<id>"``), else None."""
        scope = self.token.scope or ""
        return scope[4:] if scope.startswith("job:") else None

    def require_job(self, job_id: str | None) -> None:
        """A job-scoped token may only write to its own job's runs and models."""
        if self.job_id is not None and job_id != self.job_id:
            raise PermissionDeniedError(
                "this token belongs to another job", details={"token_job": self.job_id, "job": job_id}
            )

    def require(self, needed: Role) -> None:
        if not self.role.allows(needed):
            raise PermissionDeniedError(
                f"this needs the {needed.value} role; your token {self.token.name!r} is {self.role.value}",
                details={"needed": needed.value, "role": self.role.value},
            )


class PrincipalCache:
    """Recently verified tokens, so a hot read path does not hit the database per request.

    Keyed by the sha256 of the whole bearer value; entries live ``ttl`` seconds. Deleting a
    token through this server drops its entries at once; another control-plane process sharing
    the database notices a revocation within ``ttl`` (``AICLOUD_AUTH_CACHE_SECONDS``; 0 disables).
    """

    def __init__(self, ttl: float) -> None:
        self._cache: TTLCache[str, Principal] = TTLCache(ttl)
        self._pending: dict[str, asyncio.Future[Principal]] = {}

    async def resolve(self, store: TokenDirectory, authorization: str | None) -> Principal:
        """The principal of ``authorization``: from the cache, or from one database lookup (in a
        worker thread) shared by every concurrent request with the same header. Without the
        sharing, the 32 requests in flight when an entry expires would each run their own lookup."""
        principal = self.get(authorization) if authorization else None
        if principal is not None:
            return principal
        key = authorization or ""
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(store, authorization))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _lookup(self, store: TokenDirectory, authorization: str | None) -> Principal:
        principal = await anyio.to_thread.run_sync(authenticate, store, authorization)
        self.put(authorization or "", principal)
        return principal

    @staticmethod
    def _key(authorization: str) -> str:
        return hashlib.sha256(authorization.encode()).hexdigest()

    def get(self, authorization: str) -> Principal | None:
        principal = self._cache.get(self._key(authorization))
        expires = principal.token.expires_at if principal else None
        if expires is not None and expires <= datetime.now(UTC):
            return None
        return principal

    def put(self, authorization: str, principal: Principal) -> None:
        self._cache.put(self._key(authorization), principal)

    def forget_token(self, token_id: str) -> None:
        self._cache.discard_where(lambda _, p: p.token.id == token_id)


def authenticate(store: TokenDirectory, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer ...`` header to a principal, or raise 401."""
    if not authorization:
        raise UnauthenticatedError(
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(run `aicloud login` or see $AICLOUD_HOME/credentials)"
        )
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
    parsed = parse_token(value.strip())
    if parsed is None:
        raise UnauthenticatedError("invalid token")
    token_id, secret = parsed
    token = store.tokens.get(token_id)
    if token is None or not secret_matches(token.secret_hash, secret):
        raise UnauthenticatedError("invalid token")
    if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
        raise UnauthenticatedError(f"token {token.name!r} expired at {token.expires_at.isoformat()}")
    return Principal(workspace=store.workspaces.get(token.workspace_id), token=token)
