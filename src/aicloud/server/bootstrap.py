"""First start: the ``default`` workspace and its admin token, saved to the credentials file."""

from __future__ import annotations

import json
import logging
import os

from aicloud.auth import mint_token
from aicloud.config import Settings
from aicloud.entities import Role
from aicloud.errors import ConflictError
from aicloud.store import MetadataStore

log = logging.getLogger("aicloud.server")
DEFAULT_WORKSPACE = "default"


def write_private_file(path: os.PathLike[str] | str, text: str) -> None:
    """Write ``text`` to a file created with mode 0600 (atomically, via rename)."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def bootstrap(settings: Settings, store: MetadataStore) -> None:
    """Create workspace ``default`` and an admin token when the store has no workspace yet.

    The token is written to ``$AICLOUD_HOME/credentials`` (0600) and never logged. A
    store that already has workspaces is left alone: with a shared PostgreSQL a new
    home gets its token from an admin (``aicloud token create`` then ``aicloud login``).
    """
    if store.workspaces.get_by_name(DEFAULT_WORKSPACE) is not None:
        return
    try:
        ws = store.workspaces.create(DEFAULT_WORKSPACE)
    except ConflictError:  # another server process won the race
        return
    token_id, token, secret_hash = mint_token()
    store.tokens.create(
        token_id=token_id,
        workspace_id=ws.id,
        name="bootstrap-admin",
        role=Role.ADMIN,
        secret_hash=secret_hash,
    )
    creds = {"url": settings.server_url, "token": token, "workspace": DEFAULT_WORKSPACE}
    write_private_file(settings.credentials_path, json.dumps(creds, indent=2) + "\n")
    log.info("created workspace %r; admin token saved to %s", DEFAULT_WORKSPACE, settings.credentials_path)
