"""Streaming a stored blob back to a client, decrypted on the fly."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.responses import StreamingResponse

from aicloud.blobs import BlobStore

CHUNK = 1024 * 1024


def blob_response(blobs: BlobStore, digest: str, size: int, filename: str | None = None) -> StreamingResponse:
    """The blob as a streamed response. The first chunk is read before the headers go out, so
    damage there is a clean error response rather than a cut stream."""
    f = blobs.open(digest)
    try:
        first = f.read(CHUNK)
    except BaseException:
        f.close()
        raise

    def chunks() -> Iterator[bytes]:
        try:
            chunk = first
            while chunk:
                yield chunk
                chunk = f.read(CHUNK)
        finally:
            f.close()

    headers = {"Content-Length": str(size), "ETag": f'"{digest}"', "X-Aicloud-Sha256": digest}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)
