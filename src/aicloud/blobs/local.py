"""The local folder blob store: encrypted, content-addressed, atomic, streamed.

Layout under the store root::

    objects/ab/<digest>.data   the encrypted chunks (format in :mod:`aicloud.blobs.crypto`)
    objects/ab/<digest>.key    the sidecar, JSON: {"format", "digest", "size", "key_version",
                               "key_id", "wrapped_dek"}; the object exists once this file does
    tmp/                       writes in progress (each held under an advisory lock); an unlocked
                               file here is left from a crash and is removed at the next start
    .lock                      advisory lock: publish, delete and rewrap are exclusive, open shared

A commit fsyncs the data, renames it into place, then writes the sidecar (temporary file, fsync,
rename): a crash leaves at worst an unreferenced data file, never a visible half object.
:meth:`LocalBlobStore.rotate_master_key` rewrites sidecars only; data files are never re-encrypted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import struct
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlparse

from aicloud.blobs.base import BlobInfo, BlobStore, BlobWriter, check_digest
from aicloud.blobs.crypto import (
    DEFAULT_CHUNK_SIZE,
    HEADER,
    ChunkCipher,
    ChunkEncryptor,
    EncryptedReader,
    InvalidTag,
    corrupted,
    stored_length,
    write_all,
)
from aicloud.blobs.keyring import (
    KEY_BYTES,
    Keyring,
    key_id,
    load_keyring,
    rewrap_sealed_value,
    seal_value,
    unseal_value,
    unwrap_key,
    wrap_key,
)
from aicloud.errors import BadRequestError, DataCorruptedError, NotFoundError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LocalBlobStore", "open_local_store"]

log = logging.getLogger(__name__)

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_local_store(
    url: str,
    *,
    master_key: str | None = None,
    home: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> LocalBlobStore:
    """Open (creating if needed) the store at ``url`` (``file:///path`` or a plain path).

    The master key is ``master_key`` (base64 of 32 bytes, from AICLOUD_MASTER_KEY) when given, else the
    keyring ``<home>/master.key`` (created 0600 on first use). ``home`` defaults to the store root.
    Temporary files left by a crash are removed.
    """
    root = _path_from_url(url)
    keyring = load_keyring(master_key, home if home is not None else root)
    return LocalBlobStore(root, keyring, chunk_size=chunk_size)


def _path_from_url(url: str) -> Path:
    if "://" not in url:
        return Path(url).expanduser().absolute()
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise BadRequestError(f"unsupported blob store URL {url!r}: only file:///path is supported")
    path = unquote(parsed.path)
    if parsed.netloc not in ("", "localhost"):
        path = unquote(parsed.netloc) + path  # file://relative/path
    if not path:
        raise BadRequestError(f"blob store URL {url!r} names no folder")
    return Path(path).expanduser().absolute()


@dataclass(frozen=True)
class _Sidecar:
    digest: str
    size: int
    key_version: int
    key_id: str
    wrapped_dek: bytes

    def to_json(self) -> bytes:
        doc = {"format": 1, **asdict(self), "wrapped_dek": base64.b64encode(self.wrapped_dek).decode()}
        return json.dumps(doc).encode()

    @classmethod
    def parse(cls, raw: bytes, digest: str) -> _Sidecar:
        try:
            doc: Any = json.loads(raw)
            side = cls(
                digest=str(doc["digest"]),
                size=int(doc["size"]),
                key_version=int(doc["key_version"]),
                key_id=str(doc["key_id"]),
                wrapped_dek=base64.b64decode(str(doc["wrapped_dek"]), validate=True),
            )
            ok = doc["format"] == 1 and side.digest == digest and side.size >= 0
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise corrupted(digest, "its key sidecar is malformed")
        return side


def _dek_aad(digest: str, size: int) -> bytes:
    return f"aicloud/blob-dek/v1\x00{digest}\x00{size}".encode()


class LocalBlobStore(BlobStore):
    """Blobs in a local folder, each sealed under its own data key (see the module docstring)."""

    def __init__(
        self, root: str | os.PathLike[str], keyring: Keyring, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        self.root = Path(root)
        self.keyring = keyring
        self.chunk_size = chunk_size
        ChunkCipher.create(bytes(KEY_BYTES), chunk_size)  # validates chunk_size early
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        for folder in (self.root, self._objects, self._tmp):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_path = self.root / ".lock"
        self.remove_stale_temp_files()

    # -- paths and locks ----------------------------------------------------------------------

    def _data_path(self, digest: str) -> Path:
        return self._objects / digest[:2] / f"{digest}.data"

    def _key_path(self, digest: str) -> Path:
        return self._objects / digest[:2] / f"{digest}.key"

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        """The store-wide advisory lock (separate open files, so threads exclude each other too)."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def new_temp_file(self, suffix: str, *, holding_lock: bool = False) -> tuple[int, Path]:
        """A new, locked, 0600 file under ``tmp/`` (its lock tells the stale-file sweep it is in use).

        It is made under the shared store lock, so the sweep never sees it unlocked; pass
        ``holding_lock`` when the caller already holds the exclusive lock.
        """
        with contextlib.nullcontext() if holding_lock else self._locked(exclusive=False):
            path = self._tmp / f"{secrets.token_hex(16)}{suffix}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, path

    def remove_stale_temp_files(self) -> int:
        """Delete files under ``tmp/`` that no live writer holds; returns how many."""
        removed = 0
        with self._locked(exclusive=True):
            for entry in os.scandir(self._tmp):
                try:
                    fd = os.open(entry.path, os.O_RDONLY | _CLOEXEC)
                except OSError:
                    continue
                try:
                    if fcntl is not None:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass  # held by a live writer
                finally:
                    os.close(fd)
        if removed:
            log.info("removed %d stale temporary file(s) from %s", removed, self._tmp)
        return removed

    # -- sidecars -----------------------------------------------------------------------------

    def _read_sidecar(self, digest: str) -> _Sidecar:
        try:
            with open(self._key_path(digest), "rb") as f:
                raw = f.read(65536)
        except FileNotFoundError:
            raise NotFoundError.of("blob", digest) from None
        return _Sidecar.parse(raw, digest)

    def _unwrap(self, side: _Sidecar) -> bytes:
        master = self.keyring.get(side.key_version)
        if master is None:
            raise corrupted(
                side.digest,
                f"its data key is wrapped under master key version {side.key_version}, "
                f"which the keyring {self.keyring.source} does not hold",
            )
        try:
            return unwrap_key(master, side.wrapped_dek, _dek_aad(side.digest, side.size))
        except InvalidTag:
            if key_id(master) != side.key_id:
                raise DataCorruptedError(
                    f"stored object {side.digest} cannot be decrypted: it was sealed under master key "
                    f"version {side.key_version} with id {side.key_id}, but {self.keyring.source} holds a "
                    f"different key (id {key_id(master)}) for that version; configure the right master key",
                    details={"kind": "blob", "digest": side.digest},
                ) from None
            raise corrupted(side.digest, "its key sidecar does not authenticate") from None

    def _wrap(self, digest: str, size: int, dek: bytes) -> _Sidecar:
        version, master = self.keyring.current()
        return _Sidecar(digest, size, version, key_id(master), wrap_key(master, dek, _dek_aad(digest, size)))

    @contextlib.contextmanager
    def _sidecar_temp(self, side: _Sidecar, *, holding_lock: bool = False) -> Iterator[Path]:
        """A fsynced temporary sidecar, held locked (so no sweep takes it) until the block ends."""
        fd, path = self.new_temp_file(".key.tmp", holding_lock=holding_lock)
        try:
            write_all(fd, memoryview(side.to_json()))
            os.fsync(fd)
            yield path
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # still there only when it was not renamed into place

    # -- BlobStore ----------------------------------------------------------------------------

    def writer(self) -> BlobWriter:
        return _LocalWriter(self)

    def open(self, digest: str) -> BinaryIO:
        check_digest(digest)
        with self._locked(exclusive=False):
            side = self._read_sidecar(digest)
            try:
                fd = os.open(self._data_path(digest), os.O_RDONLY | _CLOEXEC)
            except FileNotFoundError:
                raise corrupted(digest, "its data file is missing") from None
        try:
            dek = self._unwrap(side)
            header = os.pread(fd, HEADER.size, 0)
            try:
                cipher = ChunkCipher(dek, header)
            except (ValueError, struct.error) as exc:
                raise corrupted(digest, "its data file header is invalid") from exc
            if os.fstat(fd).st_size != stored_length(side.size, cipher.chunk_size):
                raise corrupted(digest, "its data file has the wrong length (truncated or extended)")
        except BaseException:
            os.close(fd)
            raise
        reader = EncryptedReader(fd, cipher, side.size, name=digest, on_error=lambda r: corrupted(digest, r))
        return cast(BinaryIO, reader)

    def exists(self, digest: str) -> bool:
        return self._key_path(check_digest(digest)).exists()

    def size(self, digest: str) -> int:
        side = self._read_sidecar(check_digest(digest))
        self._unwrap(side)  # authenticates the size
        return side.size

    def delete(self, digest: str) -> None:
        """Remove an object; a missing object is not an error (deletes are idempotent)."""
        check_digest(digest)
        with self._locked(exclusive=True):
            for path in (self._key_path(digest), self._data_path(digest)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def digests(self) -> Iterator[str]:
        try:
            shards = sorted(e.name for e in os.scandir(self._objects) if e.is_dir() and len(e.name) == 2)
        except FileNotFoundError:
            return
        for shard in shards:
            names = sorted(e.name for e in os.scandir(self._objects / shard) if e.name.endswith(".key"))
            for name in names:
                digest = name[:-4]
                if digest[:2] == shard and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                    yield digest

    def rotate_master_key(self) -> int:
        """Add a new current master key version and rewrap every data key under it.

        Data files are untouched. Objects already on the current version are skipped. An object
        whose sidecar fails to authenticate is reported (after all others are done) as
        DataCorruptedError with ``details["failed"]``.
        """
        self.keyring.rotate()
        current, _ = self.keyring.current()
        count, failed = 0, []
        for digest in list(self.digests()):
            try:
                count += self._rewrap_object(digest, current)
            except DataCorruptedError as exc:
                log.error("cannot rewrap %s: %s", digest, exc.message)
                failed.append(digest)
        if failed:
            raise DataCorruptedError(
                f"master key rotated to version {current}; {count} object(s) rewrapped, but {len(failed)} "
                f"could not be: their key sidecars fail authentication (first: {failed[0]})",
                details={"rewrapped": count, "failed": failed, "key_version": current},
            )
        return count

    def _rewrap_object(self, digest: str, current: int) -> int:
        with self._locked(exclusive=True):
            try:
                side = self._read_sidecar(digest)
            except NotFoundError:
                return 0  # deleted meanwhile
            if side.key_version == current:
                return 0
            side = self._wrap(digest, side.size, self._unwrap(side))
            with self._sidecar_temp(side, holding_lock=True) as tmp:
                os.replace(tmp, self._key_path(digest))
        _fsync_dir(self._key_path(digest).parent)
        return 1

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        return seal_value(self.keyring, plaintext, aad)

    def unseal(self, sealed: bytes, aad: bytes = b"") -> bytes:
        return unseal_value(self.keyring, sealed, aad)

    def rewrap_sealed(self, sealed: bytes) -> bytes:
        return rewrap_sealed_value(self.keyring, sealed)

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, tmp_data: Path, digest: str, size: int, dek: bytes) -> BlobInfo:
        """Move a finished, fsynced data file into place and write its sidecar (the commit point)."""
        side = self._wrap(digest, size, dek)
        shard = self._data_path(digest).parent
        if not shard.is_dir():
            shard.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self._objects)
        try:
            with self._sidecar_temp(side) as tmp_key, self._locked(exclusive=True):
                if self._key_path(digest).exists():  # identical content is already stored
                    return BlobInfo(digest, size)
                os.replace(tmp_data, self._data_path(digest))
                os.replace(tmp_key, self._key_path(digest))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_data)  # still there only for a duplicate or a failure
        _fsync_dir(shard)
        return BlobInfo(digest, size)


class _LocalWriter(BlobWriter):
    """Streams into a locked temporary file through a :class:`ChunkEncryptor`; commit publishes it."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._fd, self._path = store.new_temp_file(".part")
        self._finalizer = weakref.finalize(self, _discard, self._fd, self._path)
        self._dek = secrets.token_bytes(KEY_BYTES)
        self._info: BlobInfo | None = None
        self._state = "open"
        try:
            self._sink = ChunkEncryptor(self._fd, self._dek, store.chunk_size)
        except BaseException:
            self.abort()
            raise

    @property
    def bytes_written(self) -> int:
        return self._sink.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != "open":
            raise ValueError(f"cannot write to a blob writer that was {self._state}")
        try:
            self._sink.write(data)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> BlobInfo:
        if self._info is not None:
            return self._info
        if self._state != "open":
            raise ValueError(f"cannot commit a blob writer that was {self._state}")
        try:
            digest, size = self._sink.finish()
            os.fsync(self._fd)
            # publish while our fd (and its lock) is still open, so no sweep can take the file
            info = self._store._publish(self._path, digest, size, self._dek)
        except BaseException:
            self.abort()
            raise
        self._finalizer.detach()
        os.close(self._fd)
        self._info, self._state = info, "committed"
        return info

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        if self._finalizer.detach() is not None:
            _discard(self._fd, self._path)


def _discard(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
