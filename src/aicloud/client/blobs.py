"""Blobs in the SDK: content-addressed files (code archives, model files) by their sha256 digest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from aicloud.client.http import Transport

BLOBS = "/api/v1/blobs"


def blob_path(digest: str) -> str:
    """``GET /api/v1/blobs/{digest}`` (``sha256:`` prefix allowed)."""
    return f"{BLOBS}/{quote(digest, safe=':')}"


class BlobsAPI:
    """``client.blobs``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def upload(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` as a blob of the workspace; returns its digest."""
        out = self._t.json("POST", BLOBS, content=data, headers={"Content-Type": content_type})
        return str(out["digest"])

    def read(self, digest: str) -> bytes:
        """A blob's bytes, in memory."""
        return self._t.request("GET", blob_path(digest)).content

    def fetch(self, digest: str, dest: Path) -> tuple[int, str]:
        """Stream a blob into ``dest`` (no digest check: compare the returned sha256 yourself);
        returns (bytes, sha256 hex)."""
        return self._t.download(blob_path(digest), dest)
