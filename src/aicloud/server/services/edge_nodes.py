"""Edge nodes (docs/edge.md): join, pull a signed bundle, leave.

A node joins with a member token of the workspace and is given its own token: role member, scope
``edge-node:<name>``, which reaches only the routes in :data:`aicloud.server.deps.EDGE_NODE_ROUTES`
(pulling bundles as that node, ``whoami``, the signing key). Removing the node deletes that token,
so the node's next call is a 401: it then deletes the bundles it holds (``aicloud.edge.node``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from aicloud.artifacts.bundle import BundleError, open_bundle
from aicloud.auth import Principal, mint_token
from aicloud.entities import ModelVersion, Role
from aicloud.entities.edge import EdgeNode
from aicloud.errors import ConflictError, NotFoundError, PermissionDeniedError
from aicloud.schemas.edge import EdgeNodeJoin
from aicloud.server.services.bundles import bundle_version, signing_key
from aicloud.server.services.models import resolve_model_ref
from aicloud.server.state import AppState

SCOPE_PREFIX = "edge-node:"

log = logging.getLogger("aicloud.server.edge")

#: One export at a time per version id: a fleet pulling one new version makes one bundle.
_building: dict[str, threading.Lock] = {}
_building_lock = threading.Lock()


def join_node(state: AppState, principal: Principal, body: EdgeNodeJoin) -> tuple[EdgeNode, str]:
    """Register a node and mint its token; returns (the node, the token, shown once)."""
    ws = principal.workspace.id
    if any(n.name == body.name for n in state.store.edge_nodes.list(ws)):
        raise ConflictError(
            f"edge node {body.name!r} already exists in this workspace", details={"name": body.name}
        )
    token_id, token, secret_hash = mint_token()
    state.store.tokens.create(
        token_id=token_id,
        workspace_id=ws,
        name=f"edge-node-{body.name}",
        role=Role.MEMBER,
        secret_hash=secret_hash,
        scope=f"{SCOPE_PREFIX}{body.name}",
    )
    try:
        node = state.store.edge_nodes.create(
            workspace_id=ws, name=body.name, labels=dict(body.labels), token_id=token_id
        )
    except BaseException:
        state.store.tokens.delete(ws, token_id)
        raise
    return node, token


def remove_node(state: AppState, principal: Principal, node_id: str) -> None:
    """Delete the node and revoke its token (at once on this server)."""
    node = state.store.edge_nodes.get(principal.workspace.id, node_id)
    state.store.tokens.delete(principal.workspace.id, node.token_id)  # the node row goes with it
    state.principals.forget_token(node.token_id)


def calling_node(state: AppState, principal: Principal, node_id: str) -> EdgeNode:
    """The node ``node_id``, when the caller is that node's own token (else 403; unknown: 404)."""
    node = state.store.edge_nodes.get(principal.workspace.id, node_id)
    if principal.token.id != node.token_id:
        raise PermissionDeniedError(f"only edge node {node.name!r} itself pulls its bundles")
    return node


def pull_bundle(state: AppState, principal: Principal, node_id: str, ref: str, out: Path) -> None:
    """Write the signed bundle of model ``ref`` (``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``) for the
    calling node to ``out`` (from the server's cache: :func:`cached_bundle`); records that it called."""
    node = calling_node(state, principal, node_id)
    try:
        version = resolve_model_ref(state, principal.workspace.id, ref)
    except NotFoundError as exc:
        raise NotFoundError(f"{ref}: {exc.message}", details=exc.details) from None
    cached_bundle(state, principal.workspace.name, version, out)
    state.store.edge_nodes.touch(node.id)


def cache_path(state: AppState, version_id: str) -> Path:
    """Where the signed bundle of a version is kept for the nodes that pull it."""
    return state.settings.home / "cache" / "bundles" / f"{version_id}.bundle"


def cached_bundle(state: AppState, workspace_name: str, version: ModelVersion, out: Path) -> None:
    """Put the signed bundle of ``version`` at ``out`` from the server's cache (checked again with
    the workspace's key before it is used; a file that fails is made again), making and caching it
    first when there is none (written to a temporary file, 0600, then renamed)."""
    path = cache_path(state, version.id)
    key = signing_key(state, version.workspace_id).public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with _building_lock:
        lock = _building.setdefault(version.id, threading.Lock())
    with lock:
        if path.exists():
            try:
                open_bundle(path, raw)
            except (BundleError, OSError) as exc:
                log.warning("cached bundle %s fails its check (%s); making it again", path.name, exc)
                path.unlink(missing_ok=True)
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".bundle")  # 0600
            os.close(fd)
            try:
                bundle_version(state, workspace_name, version, Path(tmp))
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        try:
            os.link(path, out)  # the same file: a later rebuild replaces the name, not these bytes
        except OSError:
            out.write_bytes(path.read_bytes())
