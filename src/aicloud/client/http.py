"""The SDK's HTTP layer: where the URL and token come from, typed errors from responses, and the
retry policy of workloads (:mod:`aicloud.client.retry`)."""

from __future__ import annotations

import functools
import hashlib
import json
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from aicloud.client.retry import retrying
from aicloud.config import Settings
from aicloud.errors import AicloudError, UnauthenticatedError, UnavailableError, error_from_payload

T = TypeVar("T")


def read_credentials(home: Path) -> dict[str, str]:
    """The credentials file the server writes on first start (or ``aicloud login`` writes)."""
    path = home / "credentials"
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AicloudError(f"cannot read {path}: {exc}; run `aicloud login` to rewrite it") from None
    return {k: str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def resolve(url: str | None, token: str | None) -> tuple[str, str | None]:
    """URL and token: arguments first, then ``AICLOUD_URL``/``AICLOUD_TOKEN``, then the credentials file."""
    settings = Settings()
    creds = read_credentials(settings.home)
    url = url or settings.url or creds.get("url") or settings.server_url
    token = token or settings.token or creds.get("token")
    return url.rstrip("/"), token


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of every client of this process, made once (as httpx makes it: the CA bundle,
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``): httpx would load the bundle again for each client, about 0.1 s
    of a replica's start. The warm template makes it before it forks."""
    return httpx.create_ssl_context()


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        payload: Any = response.json()
    except ValueError:
        payload = response.text
    raise error_from_payload(response.status_code, payload)


class Transport:
    """A thin wrapper over ``httpx.Client`` that raises the server's typed errors.

    With ``retry_seconds`` (the in-job session's transport) :meth:`request`, :meth:`json` and
    :meth:`download` retry for that long while the control plane is unreachable, unless called with
    ``retry=False``; without it (the SDK's) every call is tried once.
    """

    def __init__(
        self, url: str, token: str | None, timeout: float = 60.0, retry_seconds: float | None = None
    ) -> None:
        self.url = url
        self.token = token
        self.retry_seconds = retry_seconds
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, verify=tls_context())

    def _retried(self, call: Callable[[], T], what: str, retry: bool) -> T:
        if self.retry_seconds is None or not retry:
            return call()
        return retrying(call, what, self.retry_seconds)

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        return self._retried(lambda: self._request(method, path, **kwargs), f"{method} {path}", retry)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise UnavailableError(
                f"cannot reach aicloud at {self.url} ({type(exc).__name__}); is it running? try `aicloud up`"
            ) from None
        if response.status_code == 401 and not self.token:
            raise UnauthenticatedError("no token: pass token=..., set AICLOUD_TOKEN, or run `aicloud login`")
        raise_for_error(response)
        return response

    def json(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Any:
        return self.request(method, path, retry=retry, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_error(response)
                yield response
        except httpx.TransportError as exc:
            raise UnavailableError(f"connection to {self.url} failed: {type(exc).__name__}") from None

    def download(self, path: str, dest: Path, *, retry: bool = True) -> tuple[int, str]:
        """Stream a GET into ``dest`` as it arrives (retried from scratch under the retry policy);
        returns (bytes, sha256 hex)."""

        def once() -> tuple[int, str]:
            sha, size = hashlib.sha256(), 0
            with self.stream("GET", path) as response, open(dest, "wb") as f:
                for chunk in response.iter_bytes(1 << 20):
                    sha.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            return size, sha.hexdigest()

        return self._retried(once, f"GET {path}", retry)

    def close(self) -> None:
        self.http.close()
