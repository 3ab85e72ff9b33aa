"""Versioned master keys, and what is encrypted directly under them: wrapped data keys, sealed values.

Keys come from the keyring file ``<home>/master.key`` or one key from the environment.

The keyring file is JSON, created with mode 0600 on first use (never chmod-ed after the fact)::

    {"format": 1, "current": 2, "keys": {"1": "<base64 of 32 bytes>", "2": "<base64 of 32 bytes>"}}

Versions are never removed: objects and sealed values name the version that wraps their data key,
and :meth:`FileKeyring.rotate` only adds a new current version. The file is replaced atomically
(temporary file, fsync, rename) under an advisory lock (``<home>/.master.key.lock``), and a keyring
re-reads the file when it changes on disk, so a rotation made by another process is seen here.

A key given as ``AICLOUD_MASTER_KEY`` (:class:`StaticKeyring`) is version 1 and cannot be rotated:
to rotate, move it into the keyring file (``{"format": 1, "current": 1, "keys": {"1": "<the key>"}}``),
unset the variable, and rotate.

A data key is wrapped with AES-256-GCM (:func:`wrap_key`: nonce | ciphertext | tag, 60 bytes) under
associated data that names what it protects. **Sealed values** (secrets; :func:`seal_value`) get a
fresh data key each and are self-describing, so they open after a rotation::

    b"ACS\\x01" | master key version u32 BE | wrap nonce (12) | wrapped DEK (48) | nonce (12)
              | ciphertext | tag

and :func:`rewrap_sealed_value` moves one to the current master key without touching its ciphertext.
"""

from __future__ import annotations

import abc
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aicloud.errors import AicloudError, BadRequestError, DataCorruptedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "KEY_BYTES",
    "FileKeyring",
    "Keyring",
    "MemoryKeyring",
    "StaticKeyring",
    "decode_master_key",
    "key_id",
    "load_keyring",
    "rewrap_sealed_value",
    "seal_value",
    "unseal_value",
    "unwrap_key",
    "wrap_key",
]

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_SEALED_MAGIC = b"ACS\x01"
_SEALED_HEAD = struct.Struct(">4sI")
_WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES
_SEALED_MIN = _SEALED_HEAD.size + _WRAPPED_BYTES + NONCE_BYTES + TAG_BYTES
KEYRING_FILE = "master.key"
_GENERATE_HINT = 'python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'


def decode_master_key(text: str, *, source: str = "AICLOUD_MASTER_KEY") -> bytes:
    """Decode a base64 (standard or URL-safe) 32-byte master key; a clear BadRequestError otherwise."""
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        raw: bytes | None = base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = None
    if raw is None:
        raise BadRequestError(
            f"{source} is not valid base64; it must be the base64 encoding of 32 random bytes "
            f"(generate one with: {_GENERATE_HINT})"
        )
    if len(raw) != KEY_BYTES:
        raise BadRequestError(
            f"{source} decodes to {len(raw)} bytes; a master key must be exactly {KEY_BYTES} random bytes, "
            f"base64-encoded (generate one with: {_GENERATE_HINT})"
        )
    return raw


def key_id(key: bytes) -> str:
    """A short public fingerprint of a master key (tells a wrong key apart from tampering)."""
    return hashlib.sha256(b"aicloud/master-key-id\x00" + key).hexdigest()[:16]


class Keyring(abc.ABC):
    """Master keys by version; one version is current (used for every new wrap)."""

    #: Where the keys come from, for error messages (a path or an environment variable name).
    source: str = ""

    @abc.abstractmethod
    def current(self) -> tuple[int, bytes]:
        """The current version and its key."""

    @abc.abstractmethod
    def get(self, version: int) -> bytes | None:
        """The key of ``version``, or None when this keyring does not hold it."""

    @abc.abstractmethod
    def rotate(self) -> int:
        """Add a fresh random key as the new current version; returns that version."""


class StaticKeyring(Keyring):
    """One master key (from ``AICLOUD_MASTER_KEY`` or tests) as version 1; not rotatable."""

    def __init__(self, key: bytes, *, source: str = "AICLOUD_MASTER_KEY") -> None:
        if len(key) != KEY_BYTES:
            raise BadRequestError(f"{source}: a master key must be exactly {KEY_BYTES} bytes")
        self._key = key
        self.source = source

    def current(self) -> tuple[int, bytes]:
        return 1, self._key

    def get(self, version: int) -> bytes | None:
        return self._key if version == 1 else None

    def rotate(self) -> int:
        raise BadRequestError(
            f"the master key comes from {self.source}, which aicloud cannot rotate; to rotate, move it "
            f'into the keyring file <home>/{KEYRING_FILE} (mode 0600, JSON {{"format": 1, "current": 1, '
            f'"keys": {{"1": "<the key>"}}}}), unset {self.source}, and rotate again'
        )


class MemoryKeyring(Keyring):
    """Rotatable keys held in memory only (for tests and fakes; lost with the process)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._keys = {1: key if key is not None else secrets.token_bytes(KEY_BYTES)}
        self._current = 1
        self._lock = threading.Lock()
        self.source = "an in-memory keyring"

    def current(self) -> tuple[int, bytes]:
        with self._lock:
            return self._current, self._keys[self._current]

    def get(self, version: int) -> bytes | None:
        with self._lock:
            return self._keys.get(version)

    def rotate(self) -> int:
        with self._lock:
            self._current = max(self._keys) + 1
            self._keys[self._current] = secrets.token_bytes(KEY_BYTES)
            return self._current


class FileKeyring(Keyring):
    """The keyring file ``<home>/master.key``: created 0600 on first use, reloaded when it changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        self._lock = threading.Lock()
        self._keys: dict[int, bytes] = {}
        self._current = 0
        self._stamp: tuple[int, int, int] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            self._create()
        with self._lock:
            self._reload()

    # -- public -------------------------------------------------------------------------------

    def current(self) -> tuple[int, bytes]:
        with self._lock:
            self._reload_if_changed()
            return self._current, self._keys[self._current]

    def get(self, version: int) -> bytes | None:
        with self._lock:
            if version not in self._keys:
                self._reload_if_changed()
            return self._keys.get(version)

    def rotate(self) -> int:
        with self._lock, self._file_lock():
            self._reload()
            version = max(self._keys) + 1
            keys = {**self._keys, version: secrets.token_bytes(KEY_BYTES)}
            self._write(keys, version, replace=True)
            self._reload()
            return version

    # -- file handling ------------------------------------------------------------------------

    def _create(self) -> None:
        """Write a fresh keyring with version 1, unless another process got there first."""
        with self._lock, self._file_lock():
            if not self.path.exists():
                self._write({1: secrets.token_bytes(KEY_BYTES)}, 1, replace=False)

    def _write(self, keys: dict[int, bytes], current: int, *, replace: bool) -> None:
        doc = {
            "format": 1,
            "current": current,
            "keys": {str(v): base64.b64encode(k).decode("ascii") for v, k in sorted(keys.items())},
        }
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, self.path)
            else:
                try:
                    os.link(tmp, self.path)  # atomic, and never clobbers a key written meanwhile
                except FileExistsError:
                    pass
                except OSError:  # pragma: no cover - a filesystem without hard links
                    if not self.path.exists():
                        os.replace(tmp, self.path)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows: the threading lock is all we have
            yield
            return
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise AicloudError(
                f"the master keyring {self.path} has disappeared; restore it from a backup "
                "(without it no stored object can be decrypted)"
            ) from None
        if (st.st_ino, st.st_mtime_ns, st.st_size) != self._stamp:
            self._reload()

    def _reload(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise AicloudError(
                f"the master keyring {self.path} is missing; restore it from a backup"
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
        if st.st_mode & 0o077:
            log.warning(
                "master keyring %s is readable by other users (mode %o); it should be 0600",
                self.path,
                st.st_mode & 0o777,
            )
        keys, current = _parse_keyring(raw, self.path)
        self._keys, self._current = keys, current
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)


def _parse_keyring(raw: bytes, path: Path) -> tuple[dict[int, bytes], int]:
    problem = f"the master keyring {path} is malformed; restore it from a backup"
    try:
        doc: Any = json.loads(raw)
        entries = doc["keys"]
        current = int(doc["current"])
        keys = {int(v): decode_master_key(str(k), source=f"{path} (version {v})") for v, k in entries.items()}
    except BadRequestError as exc:
        raise AicloudError(f"{problem}: {exc.message}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AicloudError(problem) from None
    if current not in keys:
        raise AicloudError(f"{problem}: its current version {current} has no key")
    return keys, current


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_keyring(master_key: str | None, home: str | os.PathLike[str]) -> Keyring:
    """The keyring: ``master_key`` (base64, from AICLOUD_MASTER_KEY) wins over ``<home>/master.key``."""
    if master_key is not None:
        return StaticKeyring(decode_master_key(master_key))
    return FileKeyring(Path(home) / KEYRING_FILE)


# -- wrapping data keys and sealing small values ------------------------------------------------


def wrap_key(master: bytes, dek: bytes, aad: bytes) -> bytes:
    """Wrap a data key under a master key (AES-GCM): nonce | ciphertext | tag, 60 bytes."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, dek, aad)


def unwrap_key(master: bytes, wrapped: bytes, aad: bytes) -> bytes:
    """Unwrap a data key; raises InvalidTag when anything (key, aad, bytes) does not match."""
    if len(wrapped) != _WRAPPED_BYTES:
        raise InvalidTag()
    return AESGCM(master).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)


def _sealed_corrupted(reason: str) -> DataCorruptedError:
    return DataCorruptedError(
        f"a sealed value failed its integrity check: {reason}", details={"kind": "sealed"}
    )


def _open_sealed(keyring: Keyring, sealed: bytes) -> tuple[bytes, bytes]:
    """(header, DEK) of a sealed value."""
    if len(sealed) < _SEALED_MIN or sealed[:4] != _SEALED_MAGIC:
        raise _sealed_corrupted("it is not an aicloud sealed value, or it was truncated")
    head = bytes(sealed[: _SEALED_HEAD.size])
    _, version = _SEALED_HEAD.unpack(head)
    master = keyring.get(version)
    if master is None:
        raise _sealed_corrupted(
            f"it names master key version {version}, which the keyring {keyring.source} does not hold"
        )
    wrapped = bytes(sealed[_SEALED_HEAD.size : _SEALED_HEAD.size + _WRAPPED_BYTES])
    try:
        return head, unwrap_key(master, wrapped, b"aicloud/sealed-dek/v1\x00" + head)
    except InvalidTag:
        raise _sealed_corrupted(
            f"it was altered, or master key version {version} is not the key that sealed it"
        ) from None


def seal_value(keyring: Keyring, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Encrypt a small value under a fresh data key wrapped by the current master key."""
    version, master = keyring.current()
    head = _SEALED_HEAD.pack(_SEALED_MAGIC, version)
    dek = os.urandom(KEY_BYTES)
    wrapped = wrap_key(master, dek, b"aicloud/sealed-dek/v1\x00" + head)
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(dek).encrypt(nonce, plaintext, b"aicloud/sealed/v1\x00" + aad)
    return head + wrapped + nonce + body


def unseal_value(keyring: Keyring, sealed: bytes, aad: bytes = b"") -> bytes:
    """Decrypt a value from :func:`seal_value`; DataCorruptedError when it (or ``aad``) does not match."""
    _, dek = _open_sealed(keyring, sealed)
    start = _SEALED_HEAD.size + _WRAPPED_BYTES
    nonce, body = bytes(sealed[start : start + NONCE_BYTES]), bytes(sealed[start + NONCE_BYTES :])
    try:
        return AESGCM(dek).decrypt(nonce, body, b"aicloud/sealed/v1\x00" + aad)
    except InvalidTag:
        raise _sealed_corrupted("it was altered, or it was sealed with a different aad") from None


def rewrap_sealed_value(keyring: Keyring, sealed: bytes) -> bytes:
    """The same sealed value with its data key rewrapped under the current master key."""
    _, dek = _open_sealed(keyring, sealed)
    version, master = keyring.current()
    head = _SEALED_HEAD.pack(_SEALED_MAGIC, version)
    wrapped = wrap_key(master, dek, b"aicloud/sealed-dek/v1\x00" + head)
    return head + wrapped + bytes(sealed[_SEALED_HEAD.size + _WRAPPED_BYTES :])
