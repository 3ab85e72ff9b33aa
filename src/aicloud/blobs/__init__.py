"""Blob stores: the interface, the local folder backend, envelope encryption."""

from aicloud.blobs.base import BlobInfo, BlobStore, BlobWriter

__all__ = ["BlobInfo", "BlobStore", "BlobWriter", "open_blob_store"]


def open_blob_store(url: str, *, master_key: str | None = None, home: str | None = None) -> BlobStore:
    """Open the blob store named by ``url`` (``file:///path``); the master key comes from
    ``master_key`` (base64) or ``<home>/master.key``, created 0600 on first use."""
    from aicloud.blobs.local import open_local_store

    return open_local_store(url, master_key=master_key, home=home)
