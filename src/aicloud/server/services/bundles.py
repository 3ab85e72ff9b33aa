"""Edge bundles (docs/edge.md): a version's ONNX model, config and signature in one file, signed
with the workspace's Ed25519 key.

The workspace's private key is made on first use and kept as a sealed value in the secrets table
(:func:`~aicloud.server.services.secrets.create_secret`: AES-256-GCM under the master key, bound to
the workspace and the reserved name :data:`SIGNING_KEY_NAME`, rewrapped by key rotation). The name
cannot be a user's secret (secret names are ``[A-Za-z][A-Za-z0-9_]*``), so no job or replica can ask
for it, and the secrets list leaves it out. The private key is never returned or logged; its public
half is (``GET /api/v1/workspace/signing-key``).

A version that is not ONNX yet is exported on the fly in the compression worker
(:func:`~aicloud.server.services.compression.export_files`, checked against it as an export is) and
the bundle says so (``exported_from``); no version is registered.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aicloud.artifacts.bundle import (
    SIGNATURE_FILE,
    public_key_id,
    public_key_text,
    write_bundle,
)
from aicloud.artifacts.format import CONFIG, ONNX
from aicloud.entities import ModelVersion
from aicloud.errors import ConflictError, NotFoundError
from aicloud.schemas.compression import EXPORT_TOLERANCE
from aicloud.server.services.compression import export_files
from aicloud.server.services.secrets import RESERVED_PREFIX, create_secret, open_secret
from aicloud.server.state import AppState

__all__ = ["SIGNING_KEY_NAME", "bundle_version", "signing_key", "signing_public_key"]

#: the secrets-table name of the workspace's Ed25519 private key (not a valid user secret name)
SIGNING_KEY_NAME = f"{RESERVED_PREFIX}bundle-signing-key"


def _raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def signing_key(state: AppState, workspace_id: str) -> Ed25519PrivateKey:
    """The workspace's private signing key, made (and sealed) on first use."""
    try:
        raw = open_secret(state, workspace_id, SIGNING_KEY_NAME)
    except NotFoundError:
        key = Ed25519PrivateKey.generate()
        try:
            create_secret(state, workspace_id, SIGNING_KEY_NAME, _raw_private(key).hex())
            return key
        except ConflictError:  # another request made it first: use that one
            raw = open_secret(state, workspace_id, SIGNING_KEY_NAME)
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw))


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signing_public_key(state: AppState, workspace_id: str) -> dict[str, str]:
    """The public half: ``algorithm``, ``key_id``, ``public_key`` (``ed25519:<base64>``), ``pem``."""
    key = signing_key(state, workspace_id).public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "algorithm": "ed25519",
        "key_id": public_key_id(raw),
        "public_key": public_key_text(raw),
        "pem": pem.decode(),
    }


def bundle_version(state: AppState, workspace_name: str, version: ModelVersion, out: Path) -> dict[str, Any]:
    """Write the signed bundle of ``version`` to ``out``; returns its manifest."""
    key = signing_key(state, version.workspace_id)
    workdir = Path(tempfile.mkdtemp(prefix="aicloud-bundle-"))
    try:
        meta: dict[str, Any] = {
            "model": version.name,
            "version": version.version,
            "version_id": version.id,
            "workspace": {"id": version.workspace_id, "name": workspace_name},
        }
        if ONNX in version.files:
            members = {
                name: _blob_bytes(state, version.files[name])
                for name in (ONNX, CONFIG)
                if name in version.files
            }
        else:
            folder, derived = export_files(state, version, workdir, EXPORT_TOLERANCE)
            members = {name: (folder / name).read_bytes() for name in (ONNX, CONFIG)}
            meta["exported_from"] = {
                "format": "onnx",
                "max_abs_diff": derived.get("max_abs_diff"),
                "tolerance": derived.get("tolerance"),
            }
        members[SIGNATURE_FILE] = (json.dumps(version.signature, indent=1, sort_keys=True) + "\n").encode()
        return write_bundle(out, members, meta, sign=key.sign, public_key=_raw_public(key))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _blob_bytes(state: AppState, digest: str) -> bytes:
    with state.blobs.open(digest) as f:
        data: bytes = f.read()
    return data
