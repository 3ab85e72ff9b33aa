"""Bearer tokens: minting, hashing, and verifying.

A token reads ``aic_<id>_<secret>``. The id finds the row; only the sha256 of the
secret is stored, and it is compared in constant time. Secrets are 32 random bytes,
so a fast hash is enough (there is nothing to brute-force).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio.to_thread

from aicloud.entities import Role, Token, Workspace
from aicloud.errors import PermissionDeniedError, UnauthenticatedError
from aicloud.server.cache import TTLCache
from aicloud.store import MetadataStore

TOKEN_PREFIX = "aic_"
_TOKEN_RE = re.compile(r"^aic_(tok_[a-z0-9]{16})_([A-Za-z0-9_-]{43})\Z")


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


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_token() -> tuple[str, str, str]:
    """A new (token id, full bearer token, secret hash)."""
    token_id = "tok_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", hash_secret(secret)


class PrincipalCache:
    """Recently verified tokens, so a hot read path does not hit the database per request.

    Keyed by the sha256 of the whole bearer value; entries live ``ttl`` seconds. Deleting a
    token through this server drops its entries at once; another control-plane process sharing
    the database notices a revocation within ``ttl`` (``AICLOUD_AUTH_CACHE_SECONDS``; 0 disables).
    """

    def __init__(self, ttl: float) -> None:
        self._cache: TTLCache[str, Principal] = TTLCache(ttl)
        self._pending: dict[str, asyncio.Future[Principal]] = {}

    async def resolve(self, store: MetadataStore, authorization: str | None) -> Principal:
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

    async def _lookup(self, store: MetadataStore, authorization: str | None) -> Principal:
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


def authenticate(store: MetadataStore, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer ...`` header to a principal, or raise 401."""
    if not authorization:
        raise UnauthenticatedError(
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(run `aicloud login` or see $AICLOUD_HOME/credentials)"
        )
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
    match = _TOKEN_RE.fullmatch(value.strip())
    if match is None:
        raise UnauthenticatedError("invalid token")
    token = store.tokens.get(match.group(1))
    if token is None or not hmac.compare_digest(token.secret_hash, hash_secret(match.group(2))):
        raise UnauthenticatedError("invalid token")
    if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
        raise UnauthenticatedError(f"token {token.name!r} expired at {token.expires_at.isoformat()}")
    return Principal(workspace=store.workspaces.get(token.workspace_id), token=token)
