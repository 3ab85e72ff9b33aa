"""The deployment controller's hooks into the control plane: what a serving replica process gets.

:class:`ReplicaLauncher` builds a replica's launch request (a token scoped to its deployment, the
spec with the model version, its port and key, the spec's ``env`` and ``secrets`` as environment
variables, its ``gpus``), seals replica keys for the store with the master
key (the controller's ``ReplicaKeys``), revokes a removed replica's token and tells the controller
which version a deployment's ``name@alias`` names now (``alias_version``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aicloud.artifacts.runtimes import needs_torch
from aicloud.entities import Role
from aicloud.entities.serving import Deployment, Replica
from aicloud.errors import NotFoundError, ValidationError
from aicloud.executors.base import LaunchRequest, WorkloadLimits
from aicloud.executors.local import visible_gpus
from aicloud.executors.runtime_env import wrap as wrap_runtime_env
from aicloud.server.services.models import resolve_model_ref
from aicloud.server.services.secrets import open_secret
from aicloud.server.services.workloads import scoped_token, workload_env
from aicloud.server.state import AppState

#: Associated data of a sealed replica key (with the replica's id): a key copied onto another
#: replica's row, or any other sealed value, does not open as this replica's key.
REPLICA_KEY_AAD = b"aicloud/replica-key/v1\x00"


def check_gpus(gpus: int) -> None:
    """A deployment's ``gpus`` fit this machine, where every replica runs (on Ray too: the gateway
    reaches replicas on 127.0.0.1). Raises ValidationError naming ``gpus`` with what the machine has."""
    if gpus > 0 and gpus > (have := visible_gpus()):
        raise ValidationError.field(
            "gpus",
            f"each replica asks for {gpus} GPU(s) and this machine has {have}: "
            "set gpus to at most that (0 serves on the CPU)",
        )


def model_version_payload(state: AppState, deployment: Deployment) -> dict[str, Any] | None:
    if deployment.model_version_id is None:
        return None
    v = state.store.models.get_version_by_id(deployment.workspace_id, deployment.model_version_id)
    return {
        "id": v.id,
        "name": v.name,
        "version": v.version,
        "files": v.files,
        "config": v.config,
        "signature": v.signature,
    }


def template_of(spec: dict[str, Any]) -> str:
    """The warm template a replica may be forked from: ``serving-torch`` when it imports torch (its
    model and runtime say so), else ``serving`` (a Service that imports torch itself pays for it)."""
    mv = spec.get("model_version") or {}
    if mv and needs_torch(spec.get("runtime"), mv.get("config") or {}, mv.get("files") or {}):
        return "serving-torch"
    return "serving"


class ReplicaLauncher:
    """Builds replica launch requests (a token scoped to the deployment, the spec, the port, the key),
    and seals replica keys for the store with the master key (the controller's ``ReplicaKeys``)."""

    def __init__(self, state: AppState, server_url: str) -> None:
        self.state = state
        self.server_url = server_url

    def launch(self, deployment: Deployment, replica_id: str, port: int, replica_key: str) -> LaunchRequest:
        token = scoped_token(
            self.state,
            deployment.workspace_id,
            f"replica-{replica_id}",
            Role.VIEWER,
            f"deployment:{deployment.id}",
        )
        spec = dict(deployment.spec)
        spec["model_version"] = model_version_payload(self.state, deployment)
        # the spec's variables, then its secrets opened now (a secret deleted since is a launch error)
        extra = {k: str(v) for k, v in (spec.get("env") or {}).items()}
        for name in spec.get("secrets") or []:
            extra[name] = open_secret(self.state, deployment.workspace_id, name)
        env = workload_env(
            self.server_url,
            token,
            extra,
            AICLOUD_REPLICA_PORT=str(port),
            AICLOUD_REPLICA_ID=replica_id,
            AICLOUD_REPLICA_KEY=replica_key,
            AICLOUD_DEPLOYMENT_NAME=deployment.name,
            AICLOUD_DEPLOYMENT_SPEC=json.dumps(spec),
        )
        cpus = int(spec.get("cpus") or 1)
        runtime_env = spec.get("runtime_env")
        argv = wrap_runtime_env(
            [sys.executable, "-m", "aicloud.serving.replica"],
            env,
            runtime_env,
            self.state.settings,
            deployment.workspace_id,
        )
        return LaunchRequest(
            job_id=replica_id,
            argv=argv,
            env=env,
            cpus=cpus,
            threads=max(1, cpus // int(spec.get("batch_workers") or 1)),
            gpus=int(spec.get("gpus") or 0),  # the executor sets CUDA_VISIBLE_DEVICES, or refuses
            limits=WorkloadLimits.from_spec(spec.get("limits")),
            # a template has the control plane's packages imported: a replica with its own env starts cold
            template=None if runtime_env else template_of(spec),
        )

    def templates_needed(self) -> set[str]:
        """The warm templates the deployments in the store would fork their replicas from."""
        needed = set()
        for d in self.state.store.deployments.list_all():
            if d.spec.get("runtime_env"):
                continue
            try:
                needed.add(template_of({**d.spec, "model_version": model_version_payload(self.state, d)}))
            except NotFoundError:
                continue
        return needed

    def alias_version(self, workspace_id: str, ref: str) -> str | None:
        """The id of the version ``ref`` (``name@alias``) names now; None when it names none (the
        deployment controller's ``aliases``: a deployment follows its alias)."""
        try:
            return resolve_model_ref(self.state, workspace_id, ref).id
        except (NotFoundError, ValidationError):
            return None

    def seal_key(self, replica_id: str, key: str) -> bytes:
        return self.state.blobs.seal(key.encode(), REPLICA_KEY_AAD + replica_id.encode())

    def open_key(self, replica_id: str, sealed: bytes) -> str:
        return self.state.blobs.unseal(sealed, REPLICA_KEY_AAD + replica_id.encode()).decode()

    def revoke_token(self, replica: Replica) -> None:
        """A replica row was removed: its token goes with it."""
        try:
            deployment = self.state.store.deployments.get_any(replica.deployment_id)
        except NotFoundError:
            return
        for token in self.state.store.tokens.list(deployment.workspace_id):
            if token.name == f"replica-{replica.id}":
                self.state.store.tokens.delete(deployment.workspace_id, token.id)
                self.state.principals.forget_token(token.id)
