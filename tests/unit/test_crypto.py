"""Envelope encryption primitives and master keyrings (aicloud.blobs.crypto, aicloud.blobs.keyring)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from aicloud.blobs.crypto import ChunkCipher, InvalidTag, chunk_count, stored_length
from aicloud.blobs.keyring import (
    FileKeyring,
    MemoryKeyring,
    StaticKeyring,
    decode_master_key,
    key_id,
    load_keyring,
    rewrap_sealed_value,
    seal_value,
    unseal_value,
    unwrap_key,
    wrap_key,
)
from aicloud.errors import AicloudError, BadRequestError, DataCorruptedError

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


# -- master keys ------------------------------------------------------------------------------


def test_decode_master_key_accepts_standard_and_urlsafe_base64() -> None:
    key = b"\xfb\xff" * 16  # encodes with + and / (standard) or - and _ (URL-safe)
    assert decode_master_key(base64.b64encode(key).decode()) == key
    assert decode_master_key(base64.urlsafe_b64encode(key).decode()) == key
    assert decode_master_key(f"  {KEY_B64}\n") == KEY


@pytest.mark.parametrize("text", ["not base64!", "abc", "", "é" * 44])
def test_decode_master_key_rejects_garbage_with_a_clear_message(text: str) -> None:
    with pytest.raises(BadRequestError, match="32"):
        decode_master_key(text)


def test_decode_master_key_rejects_the_wrong_length() -> None:
    with pytest.raises(BadRequestError, match="decodes to 16 bytes"):
        decode_master_key(base64.b64encode(b"x" * 16).decode())


def test_static_keyring_is_version_one_and_refuses_rotation() -> None:
    ring = load_keyring(KEY_B64, "/nonexistent-home")
    assert isinstance(ring, StaticKeyring)
    assert ring.current() == (1, KEY)
    assert ring.get(2) is None
    with pytest.raises(BadRequestError, match=r"keyring file .*master\.key"):
        ring.rotate()


def test_keyring_file_is_created_0600_even_with_a_permissive_umask(tmp_path: os.PathLike[str]) -> None:
    old = os.umask(0)
    try:
        ring = load_keyring(None, tmp_path)
    finally:
        os.umask(old)
    assert isinstance(ring, FileKeyring)
    path = ring.path
    assert path.name == "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["current"] == 1
    assert len(base64.b64decode(doc["keys"]["1"])) == 32
    # a second open reads the same key
    assert FileKeyring(path).current() == ring.current()


def test_keyring_rotation_keeps_old_versions_and_other_instances_see_it(tmp_path: os.PathLike[str]) -> None:
    first = FileKeyring(os.path.join(tmp_path, "master.key"))
    second = FileKeyring(os.path.join(tmp_path, "master.key"))
    v1, k1 = first.current()
    assert first.rotate() == 2
    v2, k2 = first.current()
    assert (v1, v2) == (1, 2) and k1 != k2
    assert first.get(1) == k1
    assert second.get(2) == k2  # reloaded from disk on an unknown version
    assert second.current() == (2, k2)  # and on change
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == [".master.key.lock", "master.key"]  # no temp left


def test_malformed_keyring_file_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "master.key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"current": 1, "keys": {"1": "short"}}')
    os.close(fd)
    with pytest.raises(AicloudError, match=r"master keyring .* is malformed"):
        FileKeyring(path)


def test_key_id_is_stable_and_distinguishes_keys() -> None:
    assert key_id(KEY) == key_id(bytes(KEY))
    assert key_id(KEY) != key_id(b"\x00" * 32)
    assert len(key_id(KEY)) == 16


# -- chunk cipher and key wrap ----------------------------------------------------------------


def test_chunk_layout_arithmetic() -> None:
    assert chunk_count(0, 64) == 1
    assert chunk_count(64, 64) == 2  # an exact multiple ends with an empty final chunk
    assert chunk_count(65, 64) == 2
    assert stored_length(0, 64) == 20 + 16
    assert stored_length(130, 64) == 20 + 130 + 3 * 16


def _encrypt(cipher: ChunkCipher, index: int, final: bool, plain: bytes) -> bytes:
    out = bytearray(len(plain) + 16)
    cipher.encrypt_into(index, final, memoryview(plain), memoryview(out))
    return bytes(out)


def test_chunk_cipher_authenticates_index_final_flag_and_header() -> None:
    dek = os.urandom(32)
    cipher = ChunkCipher.create(dek, 64)
    ct = _encrypt(cipher, 3, False, b"hello")
    assert cipher.decrypt(3, False, ct) == b"hello"
    out = bytearray(5)
    cipher.decrypt_into(3, False, ct, memoryview(out))
    assert out == b"hello"
    for index, final in [(4, False), (3, True)]:
        with pytest.raises(InvalidTag):
            cipher.decrypt(index, final, ct)
    header = bytearray(cipher.header)
    header[-1] ^= 1  # another nonce prefix
    with pytest.raises(InvalidTag):
        ChunkCipher(dek, bytes(header)).decrypt(3, False, ct)
    with pytest.raises(InvalidTag):
        ChunkCipher(os.urandom(32), cipher.header).decrypt(3, False, ct)


def test_chunk_cipher_rejects_bad_headers_and_sizes() -> None:
    with pytest.raises(ValueError):
        ChunkCipher(bytes(32), b"XXXX" + bytes(16))
    with pytest.raises(ValueError):
        ChunkCipher.create(bytes(32), 1)


def test_wrap_and_unwrap_bind_the_aad() -> None:
    dek = os.urandom(32)
    wrapped = wrap_key(KEY, dek, b"object a")
    assert len(wrapped) == 60
    assert unwrap_key(KEY, wrapped, b"object a") == dek
    with pytest.raises(InvalidTag):
        unwrap_key(KEY, wrapped, b"object b")
    with pytest.raises(InvalidTag):
        unwrap_key(KEY, wrapped[:-1], b"object a")


# -- sealed values ----------------------------------------------------------------------------


def test_seal_round_trip_and_every_byte_flip_is_detected() -> None:
    ring = MemoryKeyring(KEY)
    sealed = seal_value(ring, b"db-password", b"secret:prod/db")
    assert b"db-password" not in sealed
    assert unseal_value(ring, sealed, b"secret:prod/db") == b"db-password"
    assert seal_value(ring, b"db-password", b"secret:prod/db") != sealed  # fresh key and nonce
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(DataCorruptedError):
            unseal_value(ring, bytes(tampered), b"secret:prod/db")


def test_unseal_rejects_the_wrong_aad_truncation_and_garbage() -> None:
    ring = MemoryKeyring(KEY)
    sealed = seal_value(ring, b"v", b"a")
    for bad, aad in [(sealed, b"b"), (sealed[:-1], b"a"), (b"", b"a"), (b"garbage" * 20, b"a")]:
        with pytest.raises(DataCorruptedError, match="sealed value"):
            unseal_value(ring, bad, aad)


def test_sealed_values_open_after_rotation_and_rewrap_moves_them() -> None:
    ring = MemoryKeyring(KEY)
    sealed = seal_value(ring, b"token", b"")
    ring.rotate()
    assert unseal_value(ring, sealed) == b"token"
    rewrapped = rewrap_sealed_value(ring, sealed)
    assert rewrapped[4:8] == (2).to_bytes(4, "big") and sealed[4:8] == (1).to_bytes(4, "big")
    assert rewrapped[-30:] == sealed[-30:]  # the value's own ciphertext is untouched
    assert unseal_value(ring, rewrapped) == b"token"
    relabelled = rewrapped[:4] + (1).to_bytes(4, "big") + rewrapped[8:]
    with pytest.raises(DataCorruptedError):  # the version is authenticated too
        unseal_value(MemoryKeyring(ring.get(2)), relabelled)


def test_unseal_names_a_missing_key_version() -> None:
    ring = MemoryKeyring()
    ring.rotate()
    sealed = seal_value(ring, b"x")
    with pytest.raises(DataCorruptedError, match="version 2"):
        unseal_value(MemoryKeyring(), sealed)
