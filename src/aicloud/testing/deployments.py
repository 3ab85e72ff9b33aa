"""In-memory :class:`DeploymentStore` for unit tests of the deployment controller.

It keeps the SQL store's semantics: entities out (copies, JSON fields read back as JSON
would), ConflictError for a name taken in the workspace, NotFoundError for a missing
deployment or replica (and for one of another workspace), generation bumped by
``update_spec``, ``ready_at`` set by a move to READY, replicas oldest first, idempotent
``delete`` and ``remove_replica``. Workspaces are not checked. One lock: thread-safe.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store.serving import DeploymentStore
from aicloud.store.sql.session import json_normalize

__all__ = ["InMemoryDeploymentStore"]


def _now() -> datetime:
    return datetime.now(UTC)


class InMemoryDeploymentStore(DeploymentStore):
    """A thread-safe DeploymentStore in dicts; see the module docstring."""

    def __init__(self) -> None:
        self._deployments: dict[str, Deployment] = {}
        self._replicas: dict[str, tuple[int, Replica]] = {}  # id → (insertion order, replica)
        self._seq = itertools.count()
        self._lock = threading.RLock()

    @staticmethod
    def _out_d(d: Deployment) -> Deployment:
        return dataclasses.replace(d, spec=json_normalize(d.spec))

    @staticmethod
    def _out_r(r: Replica) -> Replica:
        return dataclasses.replace(r, handle=json_normalize(r.handle))

    def _find(self, deployment_id: str) -> Deployment:
        d = self._deployments.get(deployment_id)
        if d is None:
            raise NotFoundError.of("deployment", deployment_id)
        return d

    def _by_name(self, workspace_id: str, name: str) -> Deployment | None:
        return next(
            (d for d in self._deployments.values() if d.workspace_id == workspace_id and d.name == name), None
        )

    def _replace(self, d: Deployment, **changes: Any) -> Deployment:
        d = dataclasses.replace(d, updated_at=_now(), **changes)
        self._deployments[d.id] = d
        return self._out_d(d)

    # -- deployments -------------------------------------------------------------------------

    def create(
        self,
        *,
        workspace_id: str,
        name: str,
        spec: dict[str, Any],
        model_version_id: str | None,
        desired: int,
        traffic: dict[str, int] | None = None,
    ) -> Deployment:
        now = _now()
        with self._lock:
            if self._by_name(workspace_id, name) is not None:
                raise ConflictError(
                    f"deployment {name!r} already exists in this workspace", details={"name": name}
                )
            d = Deployment(
                id=f"dep_{secrets.token_hex(10)}",
                workspace_id=workspace_id,
                name=name,
                spec=json_normalize(spec),
                status=DeploymentStatus.PENDING,
                generation=1,
                desired_replicas=desired,
                created_at=now,
                updated_at=now,
                model_version_id=model_version_id,
                traffic=dict(traffic) if traffic else None,
            )
            self._deployments[d.id] = d
            return self._out_d(d)

    def get(self, workspace_id: str, name: str) -> Deployment:
        with self._lock:
            d = self._by_name(workspace_id, name)
            if d is None:
                raise NotFoundError.of("deployment", name)
            return self._out_d(d)

    def get_any(self, deployment_id: str) -> Deployment:
        with self._lock:
            return self._out_d(self._find(deployment_id))

    def list(
        self,
        workspace_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        model_version_id: str | None = None,
    ) -> builtins.list[Deployment]:
        with self._lock:
            found = [
                d
                for d in self._deployments.values()
                if d.workspace_id == workspace_id
                and (model_version_id is None or d.model_version_id == model_version_id)
            ]
            found.sort(key=lambda d: (d.created_at, d.id), reverse=True)
            end = None if limit is None else offset + limit
            return [self._out_d(d) for d in found[offset:end]]

    def count(self, workspace_id: str) -> int:
        with self._lock:
            return sum(1 for d in self._deployments.values() if d.workspace_id == workspace_id)

    def list_all(self) -> builtins.list[Deployment]:
        with self._lock:
            found = sorted(self._deployments.values(), key=lambda d: (d.created_at, d.id))
            return [self._out_d(d) for d in found]

    def update_spec(
        self,
        workspace_id: str,
        name: str,
        spec: dict[str, Any],
        model_version_id: str | None,
        *,
        roll: bool = True,
        traffic: dict[str, int] | None = None,
    ) -> Deployment:
        with self._lock:
            d = self._by_name(workspace_id, name)
            if d is None:
                raise NotFoundError.of("deployment", name)
            generation = d.generation + 1 if roll else d.generation
            return self._replace(
                d,
                spec=json_normalize(spec),
                model_version_id=model_version_id,
                generation=generation,
                traffic=dict(traffic) if traffic else None,
            )

    def set_desired(self, deployment_id: str, desired: int) -> Deployment:
        if desired < 0:
            raise ValueError(f"desired replicas must be >= 0, not {desired}")
        with self._lock:
            return self._replace(self._find(deployment_id), desired_replicas=desired)

    def set_status(
        self,
        deployment_id: str,
        status: DeploymentStatus,
        message: str | None = None,
        *,
        expect: builtins.list[DeploymentStatus] | None = None,
    ) -> Deployment:
        with self._lock:
            d = self._find(deployment_id)
            if expect is not None and d.status not in {DeploymentStatus(s) for s in expect}:
                return self._out_d(d)
            return self._replace(d, status=DeploymentStatus(status), message=message)

    def delete(self, deployment_id: str) -> None:
        with self._lock:
            self._deployments.pop(deployment_id, None)
            for rid, (_, r) in list(self._replicas.items()):
                if r.deployment_id == deployment_id:
                    del self._replicas[rid]

    # -- replicas ----------------------------------------------------------------------------

    def add_replica(
        self,
        deployment_id: str,
        *,
        generation: int,
        port: int,
        handle: dict[str, Any],
        model_version_id: str | None = None,
        node_id: str | None = None,
    ) -> Replica:
        with self._lock:
            self._find(deployment_id)
            r = Replica(
                id=f"rep_{secrets.token_hex(10)}",
                deployment_id=deployment_id,
                generation=generation,
                state=ReplicaState.STARTING,
                port=port,
                created_at=_now(),
                handle=json_normalize(handle),
                model_version_id=model_version_id,
                node_id=node_id,
            )
            self._replicas[r.id] = (next(self._seq), r)
            return self._out_r(r)

    def update_replica(
        self,
        replica_id: str,
        *,
        state: ReplicaState | None = None,
        handle: dict[str, Any] | None = None,
        message: str | None = None,
        key_sealed: bytes | None = None,
        port: int | None = None,
    ) -> Replica:
        changes: dict[str, Any] = {}
        if state is not None:
            changes["state"] = ReplicaState(state)
            if state == ReplicaState.READY:
                changes["ready_at"] = _now()
        if handle is not None:
            changes["handle"] = json_normalize(handle)
        if message is not None:
            changes["message"] = message
        if key_sealed is not None:
            changes["key_sealed"] = bytes(key_sealed)
        if port is not None:
            changes["port"] = port
        with self._lock:
            found = self._replicas.get(replica_id)
            if found is None:
                raise NotFoundError.of("replica", replica_id)
            seq, r = found
            r = dataclasses.replace(r, **changes)
            self._replicas[replica_id] = (seq, r)
            return self._out_r(r)

    def replicas(self, deployment_id: str) -> builtins.list[Replica]:
        with self._lock:
            found = [(seq, r) for seq, r in self._replicas.values() if r.deployment_id == deployment_id]
            found.sort(key=lambda item: item[0])
            return [self._out_r(r) for _, r in found]

    def node_replicas(self, node_id: str) -> builtins.list[Replica]:
        with self._lock:
            found = [(seq, r) for seq, r in self._replicas.values() if r.node_id == node_id]
            found.sort(key=lambda item: item[0])
            return [self._out_r(r) for _, r in found]

    def remove_replica(self, replica_id: str) -> None:
        with self._lock:
            self._replicas.pop(replica_id, None)
