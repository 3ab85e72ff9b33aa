"""Store interface for deployments and replicas (same rules as ``store.base``)."""

from __future__ import annotations

import abc
import builtins
from datetime import datetime
from typing import Any

from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState


class DeploymentStore(abc.ABC):
    @abc.abstractmethod
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
        """Raises ConflictError when the name exists in the workspace."""

    @abc.abstractmethod
    def get(self, workspace_id: str, name: str) -> Deployment: ...

    @abc.abstractmethod
    def get_any(self, deployment_id: str) -> Deployment: ...

    @abc.abstractmethod
    def list(
        self,
        workspace_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        model_version_id: str | None = None,
    ) -> builtins.list[Deployment]:
        """Newest first (by creation, ties by id): ``limit`` of them (None: all) after ``offset``;
        ``model_version_id`` keeps those whose spec serves that version."""

    @abc.abstractmethod
    def count(self, workspace_id: str) -> int:
        """How many deployments ``list`` would return without a limit."""

    @abc.abstractmethod
    def list_all(self) -> builtins.list[Deployment]:
        """Every deployment of every workspace (the controller's view)."""

    @abc.abstractmethod
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
        """Replace the spec, the version and the traffic weights (None: no canary) and, with
        ``roll``, bump ``generation`` (replicas roll over); without it (a change of scaling or of
        traffic only) the running replicas stay."""

    @abc.abstractmethod
    def set_desired(self, deployment_id: str, desired: int) -> Deployment: ...

    @abc.abstractmethod
    def set_status(
        self,
        deployment_id: str,
        status: DeploymentStatus,
        message: str | None = None,
        *,
        expect: builtins.list[DeploymentStatus] | None = None,
    ) -> Deployment:
        """Set the status and message (None clears it). With ``expect``, compare-and-set: a
        deployment in another status is left alone and returned as it is (so the controller
        never overwrites ``deleting`` set by a request meanwhile)."""

    @abc.abstractmethod
    def delete(self, deployment_id: str) -> None:
        """Remove the deployment and its replica rows (after the controller stopped them)."""

    @abc.abstractmethod
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
        """``node_id``: placed on that edge node (docs/edge.md), which runs it."""

    @abc.abstractmethod
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
        """Moving to READY sets ``ready_at``. ``key_sealed``: the replica's sealed key (kept so
        that a restarted control plane can adopt the replica). ``port``: an edge replica's, as its
        node reports it."""

    @abc.abstractmethod
    def replicas(self, deployment_id: str) -> builtins.list[Replica]:
        """Oldest first; stopped replicas are removed by ``remove_replica`` (the deployment
        controller keeps the row of a deployment's latest failed replica, for its log)."""

    @abc.abstractmethod
    def node_replicas(self, node_id: str) -> builtins.list[Replica]:
        """The replicas placed on edge node ``node_id``, oldest first."""

    @abc.abstractmethod
    def remove_replica(self, replica_id: str) -> None: ...

    def replica_usage(
        self, workspace_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[dict[str, Any]]:
        """The workspace's replicas that ran in ``[since, until)`` with what they reserved
        (serving costs); a store that keeps no history has none."""
        return []
