"""Authentication: the one home of principals, bearer tokens and the verified-token cache.

Both the control plane's routes (``aicloud.server``) and the endpoint gateway
(``aicloud.gateway``) authenticate through this package; it knows nothing of either, nor of
the metadata store's implementation (it reads tokens and workspaces through
:class:`~aicloud.auth.principals.TokenDirectory`, which the store satisfies).

- :mod:`aicloud.auth.tokens`: the ``aic_<id>_<secret>`` format, minting and hashing.
- :mod:`aicloud.auth.principals`: :class:`Principal`, :func:`authenticate` and
  :class:`PrincipalCache`.
"""

from aicloud.auth.principals import Principal, PrincipalCache, TokenDirectory, authenticate
from aicloud.auth.tokens import TOKEN_PREFIX, hash_secret, mint_token, parse_token

__all__ = [
    "TOKEN_PREFIX",
    "Principal",
    "PrincipalCache",
    "TokenDirectory",
    "authenticate",
    "hash_secret",
    "mint_token",
    "parse_token",
]
