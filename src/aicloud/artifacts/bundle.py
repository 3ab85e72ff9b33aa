"""Edge bundles: one signed file holding an ONNX model, its config and signature (docs/edge.md).

A bundle is an uncompressed tar of flat members::

    manifest.json    {"format": "aicloud-bundle/1", "model", "version", "workspace", "created_at",
                      "key_id", "files": {"model.onnx": {"sha256", "size"}, "config.json": ..., ...}}
    manifest.sig     {"algorithm": "ed25519", "key_id", "signature": "<base64 of 64 bytes>"}
    model.onnx       the model (ONNX Runtime runs it; nothing in it is unpickled)
    config.json      preprocessing, labels, task, signature (what turns rows into the model's input)
    signature.json   the version's signature, on its own for a reader

The signature is Ed25519 over the exact bytes of ``manifest.json``, made with the workspace's
private key on the control plane; the manifest names the sha256 and size of every other member.
:func:`open_bundle` refuses a bundle unless, in this order: it is a tar of regular files with known
flat names, each once; the signature verifies with the public key the caller trusts; the members
are exactly those the manifest names; and every member's sha256 and size match. The refusal names
what failed (``details.check``: ``format``, ``signature``, ``member``, ``digest``; ``details.member``).

Standard library and ``cryptography`` only (imported when used): ``aicloud[edge]`` reads bundles
without torch, and the control plane writes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicloud.errors import InvalidDataError

FORMAT = "aicloud-bundle/1"
MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig"
SIGNATURE_FILE = "signature.json"
#: the members a bundle may hold besides the manifest and its signature
PAYLOAD = ("model.onnx", "config.json", SIGNATURE_FILE)
MAX_MEMBER_BYTES = 4 << 30
MAX_META_BYTES = 1 << 20
ALGORITHM = "ed25519"

Signer = Callable[[bytes], bytes]


class BundleError(InvalidDataError):
    """A bundle that is not to be served: its message names the check and the member that failed."""

    def __init__(self, message: str, *, check: str, member: str | None = None) -> None:
        details: dict[str, Any] = {"check": check}
        if member is not None:
            details["member"] = member
        super().__init__(message, details=details)
        self.check = check
        self.member = member


# --- keys


def public_key_id(raw: bytes) -> str:
    """A short name of an Ed25519 public key (the first 16 hex digits of its sha256)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(raw: bytes) -> str:
    """The public key as one line: ``ed25519:<base64 of its 32 bytes>`` (what ``--key`` reads)."""
    return f"{ALGORITHM}:{base64.b64encode(raw).decode()}"


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of a public key given as ``ed25519:<base64>``, bare base64, or a PEM
    ``PUBLIC KEY`` block.

    Raises:
        InvalidDataError: none of these, or not an Ed25519 key.
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise InvalidDataError(f"the key is not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidDataError("the key is not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = text.split(":", 1)[1] if text.lower().startswith(f"{ALGORITHM}:") else text
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise InvalidDataError(
            "the key is not an Ed25519 public key (expected 'ed25519:<base64 of 32 bytes>' or a PEM block)"
        )
    return raw


def read_public_key(value: str) -> bytes:
    """``--key``: a file holding the key, or the key itself."""
    path = Path(value)
    try:
        if len(value) < 4096 and path.is_file():
            value = path.read_text()
    except OSError as exc:
        raise InvalidDataError(f"cannot read key file {value}: {exc.strerror}") from None
    return parse_public_key(value)


# --- writing (the control plane)


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_bundle(
    out: Path,
    members: Mapping[str, bytes],
    meta: Mapping[str, Any],
    *,
    sign: Signer,
    public_key: bytes,
) -> dict[str, Any]:
    """Write the bundle of ``members`` (names from :data:`PAYLOAD`) to ``out``, its manifest holding
    ``meta`` and signed with ``sign`` (the private key's ``sign``); returns the manifest."""
    unknown = [n for n in members if n not in PAYLOAD]
    if unknown:
        raise ValueError(f"not bundle members: {unknown}")
    now = time.time()
    manifest = {
        "format": FORMAT,
        **meta,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "key_id": public_key_id(public_key),
        "files": {name: _digest(data) for name, data in members.items()},
    }
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    sig = {
        "algorithm": ALGORITHM,
        "key_id": public_key_id(public_key),
        "signature": base64.b64encode(sign(manifest_bytes)).decode(),
    }
    tmp = out.with_name(f".{out.name}.part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, manifest_bytes, now)
        _add(tar, MANIFEST_SIG, json.dumps(sig).encode() + b"\n", now)
        for name, data in members.items():
            _add(tar, name, data, now)
    tmp.replace(out)
    return manifest


# --- reading and verifying (the edge)


@dataclass
class VerifiedBundle:
    """A bundle whose signature and digests were checked: its manifest and its members' bytes."""

    manifest: dict[str, Any]
    members: dict[str, bytes]

    @property
    def name(self) -> str:
        return str(self.manifest.get("model") or "model")

    @property
    def version(self) -> str:
        return str(self.manifest.get("version") or "1")

    def extract(self, folder: Path) -> Path:
        """Write the model's members (``model.onnx``, ``config.json``) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.members.items():
            (folder / name).write_bytes(data)
        return folder


def _read_members(path: Path) -> dict[str, bytes]:
    allowed = {MANIFEST, MANIFEST_SIG, *PAYLOAD}
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                name = info.name
                if not info.isfile():
                    raise BundleError(
                        f"bundle member {name!r} is not a regular file", check="member", member=name
                    )
                if name not in allowed:
                    raise BundleError(
                        f"bundle member {name!r} is not part of a bundle (added after signing?)",
                        check="member",
                        member=name,
                    )
                if name in members:
                    raise BundleError(f"bundle member {name!r} appears twice", check="member", member=name)
                limit = MAX_META_BYTES if name in (MANIFEST, MANIFEST_SIG) else MAX_MEMBER_BYTES
                if info.size > limit:
                    raise BundleError(f"bundle member {name!r} is too large", check="member", member=name)
                f = tar.extractfile(info)
                assert f is not None
                members[name] = f.read()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file", check="format") from None
    except IsADirectoryError:
        raise BundleError(f"{path} is a folder, not a bundle", check="format") from None
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path} is not a bundle (not a valid tar file: {exc})", check="format") from None
    return members


def _verify_signature(manifest_bytes: bytes, sig_bytes: bytes, public_key: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        sig = json.loads(sig_bytes)
        signature = base64.b64decode(str(sig["signature"]), validate=True)
        signer = str(sig.get("key_id") or "?")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BundleError(
            f"{MANIFEST_SIG} is not a signature", check="signature", member=MANIFEST_SIG
        ) from None
    trusted = public_key_id(public_key)
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, manifest_bytes)
    except InvalidSignature:
        who = (
            f"the bundle names key {signer}"
            if signer != trusted
            else "the manifest or its signature was changed"
        )
        raise BundleError(
            f"signature check failed: {MANIFEST} is not signed by key {trusted} ({who})",
            check="signature",
            member=MANIFEST,
        ) from None


def open_bundle(path: str | Path, public_key: bytes) -> VerifiedBundle:
    """Read and verify the bundle at ``path`` against the trusted ``public_key`` (32 raw bytes).

    Raises:
        BundleError: the first check that failed (format, signature, a member added or missing, a
            member's digest), naming it; nothing of a refused bundle is returned.
    """
    members = _read_members(Path(path))
    for required in (MANIFEST, MANIFEST_SIG):
        if required not in members:
            raise BundleError(f"the bundle has no {required}", check="member", member=required)
    manifest_bytes = members.pop(MANIFEST)
    _verify_signature(manifest_bytes, members.pop(MANIFEST_SIG), public_key)
    manifest = json.loads(manifest_bytes)  # signed by the trusted key: well-formed
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST} is not an {FORMAT} manifest", check="format", member=MANIFEST)
    for name in members:
        if name not in files:
            raise BundleError(
                f"bundle member {name!r} is not in the signed manifest (added after signing)",
                check="member",
                member=name,
            )
    for name, want in files.items():
        data = members.get(name)
        if data is None:
            raise BundleError(
                f"bundle member {name!r}, named in the signed manifest, is missing",
                check="member",
                member=name,
            )
        got = _digest(data)
        if got["sha256"] != want.get("sha256") or got["size"] != want.get("size"):
            raise BundleError(
                f"digest mismatch: member {name!r} has sha256 {got['sha256'][:16]}…, the signed manifest "
                f"says {str(want.get('sha256'))[:16]}…",
                check="digest",
                member=name,
            )
    if "model.onnx" not in members or "config.json" not in members:
        raise BundleError("the bundle holds no model.onnx and config.json", check="member")
    return VerifiedBundle(manifest=manifest, members=members)
