"""An edge node's state on disk (docs/edge.md): ``aicloud edge join`` and ``aicloud edge pull``.

Under ``$AICLOUD_HOME/edge/`` (0700):

* ``node.json`` (0600): the control plane's URL, the node's id, name, labels and its own token;
* ``trusted.pub``: the workspace's signing key, pinned at join (what every pull is verified with,
  and ``aicloud edge serve``'s default ``--key``);
* ``bundles/<model>-<version>.bundle``: the bundles pulled, each verified before it is kept.

A pull the control plane refuses with a 401 (the node was removed, its token revoked) deletes every
bundle the node holds and its token: the node may no longer serve them. Serving (``aicloud edge
serve``) needs none of this online: a bundle on disk is verified again when it is served.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aicloud.artifacts.bundle import BundleError, open_bundle, parse_public_key
from aicloud.client import Client
from aicloud.config import Settings
from aicloud.errors import UnauthenticatedError, ValidationError

NODE_FILE = "node.json"
TRUSTED_KEY = "trusted.pub"
BUNDLES = "bundles"


@dataclass
class NodeState:
    url: str
    node_id: str
    name: str
    token: str = field(repr=False)
    labels: dict[str, str] = field(default_factory=dict)
    key_id: str = ""


def edge_home(home: Path | None = None) -> Path:
    return (home or Settings().home) / "edge"


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def join(url: str, token: str, name: str, labels: Mapping[str, str], home: Path | None = None) -> NodeState:
    """Register this machine with the control plane at ``url`` (``token``: a member token) and
    keep the node's own token and the pinned signing key under ``$AICLOUD_HOME/edge``."""
    folder = private_dir(edge_home(home))
    if (folder / NODE_FILE).exists():
        raise ValidationError.field(
            "node", f"this machine has joined already ({folder / NODE_FILE}); remove that file to join again"
        )
    with Client(url=url, token=token) as client:
        joined = client.edge.join(name, labels)
    state = NodeState(
        url=url.rstrip("/"),
        node_id=joined.node.id,
        name=joined.node.name,
        token=joined.token,
        labels=dict(joined.node.labels),
        key_id=joined.signing_key.key_id,
    )
    write_private(folder / TRUSTED_KEY, joined.signing_key.public_key + "\n")
    write_private(folder / NODE_FILE, json.dumps(asdict(state), indent=1) + "\n")
    return state


def load_state(home: Path | None = None) -> NodeState:
    path = edge_home(home) / NODE_FILE
    try:
        doc = json.loads(path.read_text())
        return NodeState(**doc)
    except FileNotFoundError:
        raise ValidationError.field(
            "node", "this machine is not an edge node: run `aicloud edge join URL --token T` first"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ValidationError.field("node", f"{path} is not a node file: {exc}") from None


def pinned_key(home: Path | None = None) -> bytes | None:
    """The signing key pinned at join, or None on a machine that has not joined."""
    path = edge_home(home) / TRUSTED_KEY
    return parse_public_key(path.read_text()) if path.exists() else None


def safe_name(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", part)[:100]


def forget(home: Path | None = None) -> int:
    """Delete every bundle the node holds and its token (the node was removed); returns how many bundles."""
    folder = edge_home(home)
    removed = 0
    for path in (folder / BUNDLES).glob("*.bundle") if (folder / BUNDLES).exists() else []:
        path.unlink(missing_ok=True)
        removed += 1
    node = folder / NODE_FILE
    if node.exists():
        doc = json.loads(node.read_text())
        doc["token"] = ""
        doc["revoked"] = True
        write_private(folder / f"{NODE_FILE}.revoked", json.dumps(doc, indent=1) + "\n")
        node.unlink()
    return removed


def pull(ref: str, home: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Pull the signed bundle of model ``ref`` as this node, verify it with the pinned key and keep it;
    returns (its path, its manifest).

    Raises:
        UnauthenticatedError: the node's token was refused (the node was removed): its bundles are
            deleted first.
        BundleError: the bundle failed verification (it is not kept).
    """
    state = load_state(home)
    key = pinned_key(home)
    if key is None:
        raise ValidationError.field("node", f"no pinned key at {edge_home(home) / TRUSTED_KEY}")
    folder = private_dir(edge_home(home) / BUNDLES)
    tmp = folder / ".pull.part"
    try:
        with Client(url=state.url, token=state.token) as client:
            client.edge.pull(state.node_id, ref, tmp)
    except UnauthenticatedError:
        n = forget(home)
        raise UnauthenticatedError(
            f"the control plane refused this node's token (the node was removed or its token revoked); "
            f"its {n} bundle(s) were deleted and it no longer pulls"
        ) from None
    try:
        manifest = open_bundle(tmp, key).manifest
    except BundleError:
        tmp.unlink(missing_ok=True)
        raise
    dest = (
        folder / f"{safe_name(str(manifest.get('model')))}-{safe_name(str(manifest.get('version')))}.bundle"
    )
    os.replace(tmp, dest)
    return dest, manifest


def local_bundles(home: Path | None = None) -> list[tuple[Path, dict[str, Any] | None]]:
    """The bundles on disk, each with its manifest when it verifies with the pinned key (else None)."""
    folder = edge_home(home) / BUNDLES
    key = pinned_key(home)
    out: list[tuple[Path, dict[str, Any] | None]] = []
    for path in sorted(folder.glob("*.bundle")) if folder.exists() else []:
        try:
            out.append((path, open_bundle(path, key).manifest if key else None))
        except BundleError:
            out.append((path, None))
    return out
