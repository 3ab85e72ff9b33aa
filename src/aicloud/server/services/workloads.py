"""What every workload the control plane launches gets: a token scoped to it, and its environment.

Jobs (:mod:`~aicloud.server.services.jobs`) and replicas (:mod:`~aicloud.server.services.replicas`)
both run user code that reaches the control plane only over HTTP, with a token that can do no more
than that workload needs; the environment carries none of the control plane's own ``AICLOUD_*``
settings (its database URL, its master key).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from aicloud.auth import mint_token
from aicloud.entities import Role
from aicloud.server.state import AppState


def scoped_token(state: AppState, workspace_id: str, name: str, role: Role, scope: str) -> str:
    """Mint a token limited to ``scope`` (``job:<id>``, ``deployment:<id>``), store its hash, return it."""
    token_id, token, secret_hash = mint_token()
    state.store.tokens.create(
        token_id=token_id,
        workspace_id=workspace_id,
        name=name,
        role=role,
        secret_hash=secret_hash,
        scope=scope,
    )
    return token


def workload_env(url: str, token: str, extra: Mapping[str, str], **aicloud: str) -> dict[str, str]:
    """The control plane's environment without its ``AICLOUD_*`` settings, then ``extra`` (the spec's
    variables and secrets), then the workload's own: ``AICLOUD_URL``, ``AICLOUD_TOKEN``, ``aicloud``,
    unbuffered output, and ``python`` on ``PATH`` meaning the interpreter aicloud runs on (its venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(extra)
    env.update(
        AICLOUD_URL=url,
        AICLOUD_TOKEN=token,
        **aicloud,
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)]),
    )
    return env
