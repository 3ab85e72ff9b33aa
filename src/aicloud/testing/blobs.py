"""An in-memory :class:`~aicloud.blobs.BlobStore` for unit tests of code that stores blobs.

Objects live in a dict, unencrypted (nothing touches the disk). Everything else follows the
interface: content addressing, atomic commit, seekable read-only ``open``, NotFoundError for
unknown or malformed digests, idempotent delete, and *real* sealing of small values (AES-GCM
envelope under an in-memory, rotatable keyring), so tampering with a sealed value raises
DataCorruptedError here too. :meth:`InMemoryBlobStore.corrupt` makes an object fail its
integrity check, to test how callers handle DataCorruptedError.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from typing import BinaryIO, cast

from aicloud.blobs.base import BlobInfo, BlobStore, BlobWriter, check_digest
from aicloud.blobs.crypto import corrupted
from aicloud.blobs.keyring import MemoryKeyring, rewrap_sealed_value, seal_value, unseal_value
from aicloud.errors import NotFoundError

__all__ = ["InMemoryBlobStore"]


class _ReadOnlyBytesIO(io.BytesIO):
    mode = "rb"

    def writable(self) -> bool:
        return False

    def write(self, data: object) -> int:
        raise io.UnsupportedOperation("blob files are read-only")

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("blob files are read-only")


class InMemoryBlobStore(BlobStore):
    """A thread-safe BlobStore in a dict; see the module docstring for what it fakes."""

    def __init__(self, master_key: bytes | None = None) -> None:
        self.keyring = MemoryKeyring(master_key)
        self._objects: dict[str, bytes] = {}
        self._corrupt: set[str] = set()
        self._lock = threading.Lock()

    def corrupt(self, digest: str) -> None:
        """Make every later ``open``/``read_bytes`` of ``digest`` raise DataCorruptedError."""
        with self._lock:
            self._corrupt.add(check_digest(digest))

    def _get(self, digest: str) -> bytes:
        check_digest(digest)
        with self._lock:
            data = self._objects.get(digest)
            if data is None:
                raise NotFoundError.of("blob", digest)
            if digest in self._corrupt:
                raise corrupted(digest)
            return data

    def writer(self) -> BlobWriter:
        return _MemoryWriter(self)

    def open(self, digest: str) -> BinaryIO:
        reader = _ReadOnlyBytesIO(self._get(digest))
        reader.name = digest
        return cast(BinaryIO, reader)

    def exists(self, digest: str) -> bool:
        check_digest(digest)
        with self._lock:
            return digest in self._objects

    def size(self, digest: str) -> int:
        return len(self._get(digest))

    def delete(self, digest: str) -> None:
        check_digest(digest)
        with self._lock:
            self._objects.pop(digest, None)
            self._corrupt.discard(digest)

    def digests(self) -> Iterator[str]:
        with self._lock:
            names = sorted(self._objects)
        yield from names

    def rotate_master_key(self) -> int:
        self.keyring.rotate()
        with self._lock:
            return len(self._objects)

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        return seal_value(self.keyring, plaintext, aad)

    def unseal(self, sealed: bytes, aad: bytes = b"") -> bytes:
        return unseal_value(self.keyring, sealed, aad)

    def rewrap_sealed(self, sealed: bytes) -> bytes:
        return rewrap_sealed_value(self.keyring, sealed)

    def _publish(self, data: bytes) -> BlobInfo:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._objects.setdefault(digest, data)
        return BlobInfo(digest, len(data))


class _MemoryWriter(BlobWriter):
    def __init__(self, store: InMemoryBlobStore) -> None:
        self._store = store
        self._buf = bytearray()
        self._state = "open"
        self._info: BlobInfo | None = None

    @property
    def bytes_written(self) -> int:
        return len(self._buf) if self._info is None else self._info.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != "open":
            raise ValueError(f"cannot write to a blob writer that was {self._state}")
        self._buf += data

    def commit(self) -> BlobInfo:
        if self._info is not None:
            return self._info
        if self._state != "open":
            raise ValueError(f"cannot commit a blob writer that was {self._state}")
        self._info = self._store._publish(bytes(self._buf))
        self._state, self._buf = "committed", bytearray()
        return self._info

    def abort(self) -> None:
        if self._state == "open":
            self._state, self._buf = "aborted", bytearray()
