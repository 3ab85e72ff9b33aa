"""The encrypted object format (AES-256-GCM in chunks): streaming encryption and lazy decryption.

Every object has its own random 256-bit data key (DEK). The data file is a 20-byte header followed
by chunks::

    header   = b"AICB" | format u8 (1) | 3 zero bytes | chunk_size u32 BE | nonce_prefix (8 random bytes)
    chunk i  = AES-GCM(DEK, nonce = nonce_prefix | i as u32 BE,
                       aad = header | i as u64 BE | final flag u8) → ciphertext | 16-byte tag

Every chunk holds ``chunk_size`` plaintext bytes except the last, which holds ``size % chunk_size``
(possibly zero: an object always has ``size // chunk_size + 1`` chunks, so the layout follows from
the size alone and random access is arithmetic). The chunk index and the final flag are
authenticated, so reordered, dropped, truncated or appended chunks fail to open; the header is
authenticated by every chunk. The digest is not known until the last byte is written, so it is bound
through the DEK instead: the wrapped DEK (in the object's sidecar, see :mod:`aicloud.blobs.local`
and :func:`aicloud.blobs.keyring.wrap_key`) is authenticated together with the digest and the size,
so a data file moved under another digest decrypts under the wrong key.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aicloud.errors import DataCorruptedError, PayloadTooLargeError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "HEADER",
    "TAG_BYTES",
    "ChunkCipher",
    "ChunkEncryptor",
    "EncryptedReader",
    "InvalidTag",
    "chunk_count",
    "corrupted",
    "stored_length",
    "write_all",
]

MAGIC = b"AICB"
FORMAT = 1
HEADER = struct.Struct(">4sB3xI8s")
TAG_BYTES = 16
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 64 * 1024 * 1024
MAX_CHUNKS = 2**32  # the chunk index is the last 4 bytes of the nonce

_HAS_INTO = hasattr(AESGCM, "encrypt_into")  # cryptography >= 45
_PARALLEL_HASH_MIN = 256 * 1024  # below this, hashing inline beats a hand-off to the hash thread
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def corrupted(digest: str, reason: str = "") -> DataCorruptedError:
    """The error for a stored object that failed authentication."""
    message = f"stored object {digest} failed its integrity check; it was altered on disk"
    return DataCorruptedError(
        f"{message} ({reason})" if reason else message, details={"kind": "blob", "digest": digest}
    )


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks an object of ``size`` plaintext bytes has (always at least one)."""
    return size // chunk_size + 1


def stored_length(size: int, chunk_size: int) -> int:
    """The exact length of the data file of an object of ``size`` plaintext bytes."""
    return HEADER.size + size + chunk_count(size, chunk_size) * TAG_BYTES


class ChunkCipher:
    """Encrypts and decrypts the chunks of one object under its data key."""

    def __init__(self, dek: bytes, header: bytes) -> None:
        magic, fmt, chunk_size, prefix = HEADER.unpack(header)
        if magic != MAGIC or fmt != FORMAT or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError("not an aicloud blob header")
        self.header = bytes(header)
        self.chunk_size: int = chunk_size
        self._prefix: bytes = prefix
        self._aead = AESGCM(dek)

    @classmethod
    def create(cls, dek: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkCipher:
        """A cipher for a new object, with a fresh random nonce prefix."""
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}")
        return cls(dek, HEADER.pack(MAGIC, FORMAT, chunk_size, os.urandom(8)))

    def _nonce(self, index: int) -> bytes:
        return self._prefix + index.to_bytes(4, "big")

    def _aad(self, index: int, final: bool) -> bytes:
        return self.header + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")

    def encrypt_into(self, index: int, final: bool, plaintext: memoryview, out: memoryview) -> None:
        """Encrypt chunk ``index`` into ``out`` (exactly ``len(plaintext) + 16`` bytes)."""
        if _HAS_INTO:
            self._aead.encrypt_into(self._nonce(index), plaintext, self._aad(index, final), out)
        else:  # pragma: no cover - older cryptography
            out[:] = self._aead.encrypt(self._nonce(index), plaintext, self._aad(index, final))

    def decrypt(self, index: int, final: bool, ciphertext: Any) -> bytes:
        """Decrypt and authenticate chunk ``index``; raises InvalidTag."""
        return self._aead.decrypt(self._nonce(index), ciphertext, self._aad(index, final))

    def decrypt_into(self, index: int, final: bool, ciphertext: Any, out: memoryview) -> None:
        """Decrypt chunk ``index`` into ``out`` (``len(ciphertext) - 16`` bytes); raises InvalidTag."""
        if _HAS_INTO:
            self._aead.decrypt_into(self._nonce(index), ciphertext, self._aad(index, final), out)
        else:  # pragma: no cover - older cryptography
            out[:] = self.decrypt(index, final, ciphertext)


# -- writing -----------------------------------------------------------------------------------


class ChunkEncryptor:
    """Streams plaintext of any piece size into ``fd`` as the object format, hashing it on the way.

    Whole chunks are taken straight from the caller's buffer (no copy). sha256, the slowest step,
    runs on a helper thread while this thread encrypts and writes (both release the GIL), and it
    keeps running after ``write`` returns while the caller fetches the next piece, when the piece
    is immutable ``bytes`` (a mutable buffer is hashed before ``write`` returns). Small pieces
    collect in two alternating chunk buffers. The caller owns ``fd``, its fsync and its lifetime.
    """

    def __init__(self, fd: int, dek: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._fd = fd
        self._cipher = ChunkCipher.create(dek, chunk_size)
        self._cs = chunk_size
        self._hash = hashlib.sha256()
        self._hashing: Future[None] | None = None  # at most one, so updates stay in order
        self._spare = bytearray(chunk_size)
        self._buf = bytearray(chunk_size)
        self._fill = 0
        self._out = bytearray(chunk_size + TAG_BYTES)
        self._index = 0
        self.size = 0
        write_all(fd, memoryview(self._cipher.header))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Add plaintext (bytes or any buffer)."""
        view = memoryview(data).cast("B")
        cs, pos, n = self._cs, 0, len(view)
        self.size += n
        if self._fill:
            pos = min(cs - self._fill, n)
            self._buf[self._fill : self._fill + pos] = view[:pos]
            self._fill += pos
            if self._fill == cs:
                self._emit(memoryview(self._buf))
                self._buf, self._spare = self._spare, self._buf  # the spare's hash has finished
                self._fill = 0
        whole = (n - pos) // cs * cs
        if whole:  # full chunks go straight from the caller's buffer
            self._emit(view[pos : pos + whole])
            pos += whole
            if type(data) is not bytes:
                self._wait_for_hash()  # the caller may reuse a mutable buffer once we return
        if pos < n:
            self._buf[: n - pos] = view[pos:]
            self._fill = n - pos

    def finish(self) -> tuple[str, int]:
        """Write the final chunk; returns (hex sha256 of the plaintext, plaintext size)."""
        self._wait_for_hash()
        tail = memoryview(self._buf)[: self._fill]
        self._hash.update(tail)
        self._seal(tail, final=True)
        self._buf = self._spare = self._out = bytearray()
        return self._hash.hexdigest(), self.size

    def _emit(self, view: memoryview) -> None:
        """Start hashing whole, non-final chunks (helper thread), then encrypt and write them here."""
        self._wait_for_hash()
        if len(view) >= _PARALLEL_HASH_MIN:
            self._hashing = _get_pool().submit(self._hash.update, view)
        else:
            self._hash.update(view)
        for offset in range(0, len(view), self._cs):
            self._seal(view[offset : offset + self._cs], final=False)

    def _wait_for_hash(self) -> None:
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            hashing.result()

    def _seal(self, plain: memoryview, *, final: bool) -> None:
        if self._index >= MAX_CHUNKS:
            raise PayloadTooLargeError("a blob may hold at most 2**32 chunks")
        out = memoryview(self._out)[: len(plain) + TAG_BYTES]
        self._cipher.encrypt_into(self._index, final, plain, out)
        write_all(self._fd, out)
        self._index += 1


def write_all(fd: int, data: memoryview) -> None:
    """os.write until everything is written."""
    while data:
        data = data[os.write(fd, data) :]


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = min(8, os.cpu_count() or 2)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aicloud-blob")
        return _pool


# -- reading -----------------------------------------------------------------------------------


class EncryptedReader(io.BufferedIOBase):
    """A seekable, read-only file of an object's plaintext that decrypts chunks on demand.

    It owns ``fd`` (closed with the reader). The last chunk is authenticated when the reader is
    made, so a truncated or tampered tail fails at ``open``; every other chunk is authenticated
    when it is first read. ``fileno()`` is unsupported on purpose: the descriptor holds ciphertext.
    """

    mode = "rb"

    def __init__(
        self,
        fd: int,
        cipher: ChunkCipher,
        size: int,
        *,
        name: str,
        on_error: Callable[[str], DataCorruptedError],
    ) -> None:
        super().__init__()
        self._fd = fd
        self._cipher = cipher
        self._size = size
        self._cs = cipher.chunk_size
        self._last = size // self._cs
        self._pos = 0
        self._on_error = on_error
        self._ct = bytearray(self._cs + TAG_BYTES)
        self._ct_ahead = bytearray(self._cs + TAG_BYTES)
        self._cached_index = -1
        self._cached = b""
        self._previous = -2  # the last chunk fetched, to spot sequential reading
        self._ahead: tuple[int, Future[bytes]] | None = None
        self.name = name
        try:
            self._tail = self._decrypt(self._last)
        except BaseException:
            os.close(fd)
            raise

    # -- io protocol --------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence!r})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        pos = self._pos
        end = self._size if size is None or size < 0 else min(self._size, pos + size)
        if end <= pos:
            return b""
        pieces: list[bytes | memoryview] = []
        while pos < end:
            index, offset = divmod(pos, self._cs)
            chunk = self._chunk(index)
            take = min(len(chunk) - offset, end - pos)
            whole = offset == 0 and take == len(chunk)
            pieces.append(chunk if whole else memoryview(chunk)[offset : offset + take])
            pos += take
        self._pos = end
        if len(pieces) == 1:
            return pieces[0] if isinstance(pieces[0], bytes) else bytes(pieces[0])
        return b"".join(pieces)

    def read1(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._cs - self._pos % self._cs
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        out = memoryview(buffer).cast("B")
        pos, end = self._pos, min(self._size, self._pos + len(out))
        done = 0
        while pos < end:
            index, offset = divmod(pos, self._cs)
            length = self._plain_length(index)
            take = min(length - offset, end - pos)
            if (
                offset == 0
                and take == length
                and index not in (self._cached_index, self._last, self._previous + 1)
            ):
                self._decrypt(
                    index, out[done : done + take]
                )  # random access: straight into the caller's buffer
            else:
                out[done : done + take] = memoryview(self._chunk(index))[offset : offset + take]
            pos += take
            done += take
        self._pos = pos
        return done

    def readinto1(self, buffer: Any) -> int:
        return self.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            try:
                self._settle_ahead()  # the read-ahead uses the descriptor
                os.close(self._fd)
            finally:
                self._cached = self._tail = b""
                super().close()

    # -- chunks -------------------------------------------------------------------------------

    def _plain_length(self, index: int) -> int:
        return self._cs if index < self._last else self._size - self._last * self._cs

    def _chunk(self, index: int) -> bytes:
        if index == self._last:
            return self._tail
        if index != self._cached_index:
            ahead = self._settle_ahead()
            self._cached = ahead[1].result() if ahead and ahead[0] == index else self._decrypt(index)
            self._cached_index = index
            if index == self._previous + 1 and index + 1 < self._last:  # sequential: decrypt the next
                self._ahead = (index + 1, _get_pool().submit(self._decrypt, index + 1, None, self._ct_ahead))
            self._previous = index
        return self._cached

    def _settle_ahead(self) -> tuple[int, Future[bytes]] | None:
        """Take the pending read-ahead, after it finished (its errors surface only if it is used)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].exception()
        return ahead

    def _decrypt(self, index: int, into: memoryview | None = None, buffer: bytearray | None = None) -> bytes:
        want = self._plain_length(index) + TAG_BYTES
        ct = memoryview(self._ct if buffer is None else buffer)[:want]
        if _pread_into(self._fd, ct, HEADER.size + index * (self._cs + TAG_BYTES)) != want:
            raise self._on_error("the data file is shorter than its chunks")
        try:
            if into is None:
                return self._cipher.decrypt(index, index == self._last, ct)
            self._cipher.decrypt_into(index, index == self._last, ct, into)
            return b""
        except InvalidTag:
            raise self._on_error(f"chunk {index} does not authenticate") from None


def _pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    """Fill ``buffer`` from ``offset``; returns the bytes read (fewer only at end of file)."""
    done = 0
    while done < len(buffer):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [buffer[done:]], offset + done)
        else:  # pragma: no cover - platforms without preadv
            data = os.pread(fd, len(buffer) - done, offset + done)
            got = len(data)
            buffer[done : done + got] = data
        if got == 0:
            break
        done += got
    return done
