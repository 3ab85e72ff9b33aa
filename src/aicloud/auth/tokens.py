"""Bearer tokens: the one home of their format, minting and hashing.

A token reads ``aic_<id>_<secret>``. The id finds the row; only the sha256 of the
secret is stored, and it is compared in constant time. Secrets are 32 random bytes,
so a fast hash is enough (there is nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_PREFIX = "aic_"
_TOKEN_RE = re.compile(r"^aic_(tok_[a-z0-9]{16})_([A-Za-z0-9_-]{43})\Z")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_token() -> tuple[str, str, str]:
    """A new (token id, full bearer token, secret hash)."""
    token_id = "tok_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", hash_secret(secret)


def parse_token(value: str) -> tuple[str, str] | None:
    """``aic_<id>_<secret>`` → (token id, secret); None when ``value`` is not a token."""
    match = _TOKEN_RE.fullmatch(value)
    return None if match is None else (match.group(1), match.group(2))


def secret_matches(secret_hash: str, secret: str) -> bool:
    """Whether ``secret`` hashes to the stored ``secret_hash`` (constant-time comparison)."""
    return hmac.compare_digest(secret_hash, hash_secret(secret))
