"""The BlobStore interface: content-addressed, encrypted-at-rest, streamed objects.

A blob is addressed by the sha256 of its *plaintext*. Writes go through a
:class:`BlobWriter` (stream bytes in, then ``commit``), which is atomic: until
``commit`` returns, no reader can see the object, and a crash leaves at most a
temporary file that the store removes at its next start. Reads return a seekable,
read-only binary file object that decrypts and authenticates on the fly, so a
1 GB object never sits in memory and a tampered object raises
:class:`aicloud.errors.DataCorruptedError` instead of returning garbage.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from aicloud.errors import DataCorruptedError, NotFoundError


@dataclass(frozen=True)
class BlobInfo:
    digest: str  # hex sha256 of the plaintext
    size: int  # plaintext bytes


class BlobWriter(abc.ABC):
    """Streams one new object into the store. Use as a context manager; abort on error."""

    @abc.abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append plaintext; pieces of any size. A mutable buffer may be reused once this returns."""

    @property
    @abc.abstractmethod
    def bytes_written(self) -> int: ...

    @abc.abstractmethod
    def commit(self) -> BlobInfo:
        """Seal and publish the object; idempotent for identical content (same digest)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop everything written so far. Safe to call twice or after commit (then a no-op)."""

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


class BlobStore(abc.ABC):
    """Content-addressed object storage with envelope encryption."""

    @abc.abstractmethod
    def writer(self) -> BlobWriter: ...

    @abc.abstractmethod
    def open(self, digest: str) -> BinaryIO:
        """A seekable read-only file of the plaintext; raises NotFoundError, DataCorruptedError."""

    @abc.abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abc.abstractmethod
    def size(self, digest: str) -> int: ...

    @abc.abstractmethod
    def delete(self, digest: str) -> None:
        """Remove an object; deleting a missing object is a no-op (deletes are idempotent)."""

    @abc.abstractmethod
    def digests(self) -> Iterator[str]: ...

    @abc.abstractmethod
    def rotate_master_key(self) -> int:
        """Make a new master key version current and rewrap every data key; returns objects rewrapped."""

    @abc.abstractmethod
    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt a small value (a secret) under the current master key (envelope, versioned)."""

    @abc.abstractmethod
    def unseal(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Decrypt a value from :meth:`seal`; DataCorruptedError if it was altered or ``aad`` differs."""

    @abc.abstractmethod
    def rewrap_sealed(self, sealed: bytes) -> bytes:
        """The same sealed value with its data key rewrapped under the current master key.

        After :meth:`rotate_master_key`, the server passes every stored secret through this so
        that old master key versions stop being needed. No ``aad`` is needed: the value's own
        ciphertext is not touched.
        """

    def put_bytes(self, data: bytes) -> BlobInfo:
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def iter_chunks(self, digest: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with self.open(digest) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def verify(self, digest: str) -> BlobInfo:
        """Read the whole object and check its sha256 against ``digest`` (a full scrub of one object).

        Raises NotFoundError, or DataCorruptedError when any byte fails authentication or the
        plaintext does not hash to its address.
        """
        h = hashlib.sha256()
        size = 0
        for chunk in self.iter_chunks(digest, 4 * 1024 * 1024):
            h.update(chunk)
            size += len(chunk)
        if h.hexdigest() != digest:
            raise DataCorruptedError(
                f"stored object {digest} failed its integrity check; its content hashes to {h.hexdigest()}",
                details={"kind": "blob", "digest": digest},
            )
        return BlobInfo(digest, size)


def check_digest(digest: str) -> str:
    """Refuse anything that is not a lowercase hex sha256 (keeps digests out of path tricks)."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise NotFoundError(f"blob {digest[:80]!r} does not exist", details={"kind": "blob"})
    return digest
