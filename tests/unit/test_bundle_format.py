"""The edge bundle format (aicloud.artifacts.bundle): a signed bundle opens with its key, and each
kind of tampering is refused naming the check and the member (docs/edge.md)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aicloud.artifacts.bundle import (
    BundleError,
    open_bundle,
    parse_public_key,
    public_key_id,
    public_key_text,
    write_bundle,
)
from aicloud.errors import InvalidDataError

MEMBERS = {
    "model.onnx": b"\x08\x07onnx-bytes" * 50,
    "config.json": b'{"task": "tabular-classification"}',
    "signature.json": b'{"inputs": []}',
}


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, bytes]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "m.bundle"
    write_bundle(path, MEMBERS, {"model": "m", "version": 2}, sign=key.sign, public_key=raw_public(key))
    return path, raw_public(key)


def read(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {i.name: tar.extractfile(i).read() for i in tar}  # type: ignore[union-attr]


def write(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def refusal(path: Path, key: bytes) -> BundleError:
    with pytest.raises(BundleError) as caught:
        open_bundle(path, key)
    return caught.value


def test_a_signed_bundle_opens_with_its_key(signed: tuple[Path, bytes], tmp_path: Path) -> None:
    path, key = signed
    bundle = open_bundle(path, key)
    assert bundle.members == MEMBERS
    assert (bundle.name, bundle.version) == ("m", "2")
    assert bundle.manifest["key_id"] == public_key_id(key)
    assert set(bundle.manifest["files"]) == set(MEMBERS)
    folder = bundle.extract(tmp_path / "out")
    assert (folder / "model.onnx").read_bytes() == MEMBERS["model.onnx"]


def test_one_byte_changed_in_a_member_is_a_digest_mismatch(
    signed: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, key = signed
    files = read(path)
    onnx = bytearray(files["model.onnx"])
    onnx[len(onnx) // 2] ^= 1
    err = refusal(write(tmp_path / "b", {**files, "model.onnx": bytes(onnx)}), key)
    assert (err.check, err.member) == ("digest", "model.onnx")
    assert "digest mismatch" in err.message and "'model.onnx'" in err.message


def test_a_changed_manifest_or_another_key_fails_the_signature(
    signed: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, key = signed
    files = read(path)
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["model.onnx"]["size"] += 0  # re-encoded: other bytes, same meaning
    changed = write(tmp_path / "b", {**files, "manifest.json": json.dumps(manifest).encode()})
    assert refusal(changed, key).check == "signature"
    other = raw_public(Ed25519PrivateKey.generate())
    err = refusal(path, other)
    assert err.check == "signature"
    assert public_key_id(other) in err.message and public_key_id(key) in err.message


def test_a_member_added_or_removed_is_refused(signed: tuple[Path, bytes], tmp_path: Path) -> None:
    path, key = signed
    files = read(path)
    err = refusal(write(tmp_path / "added", {**files, "run.py": b"x"}), key)
    assert (err.check, err.member) == ("member", "run.py")
    less = {k: v for k, v in files.items() if k != "config.json"}
    err = refusal(write(tmp_path / "removed", less), key)
    assert (err.check, err.member) == ("member", "config.json") and "missing" in err.message
    err = refusal(write(tmp_path / "nosig", {k: v for k, v in files.items() if k != "manifest.sig"}), key)
    assert err.member == "manifest.sig"


def test_links_folders_duplicates_and_junk_are_refused(signed: tuple[Path, bytes], tmp_path: Path) -> None:
    path, key = signed
    files = read(path)
    link = tmp_path / "link"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    assert "not a regular file" in refusal(link, key).message
    dup = tmp_path / "dup"
    with tarfile.open(dup, "w") as tar:
        for name in ("config.json", "config.json"):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    assert "twice" in refusal(dup, key).message
    junk = tmp_path / "junk"
    junk.write_bytes(b"no tar here" * 100)
    assert refusal(junk, key).check == "format"
    assert refusal(tmp_path / "missing", key).check == "format"


def test_public_keys_parse_in_each_written_form(signed: tuple[Path, bytes]) -> None:
    _, key = signed
    pem = (
        Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert parse_public_key(public_key_text(key)) == key
    assert parse_public_key(public_key_text(key).split(":", 1)[1]) == key
    assert len(parse_public_key(pem)) == 32
    for bad in ("ed25519:abc", "", "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"):
        with pytest.raises(InvalidDataError):
            parse_public_key(bad)
