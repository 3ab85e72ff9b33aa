"""Store interface for edge nodes (same rules as ``store.base``)."""

from __future__ import annotations

import abc
import builtins

from aicloud.entities.edge import EdgeNode


class EdgeNodeStore(abc.ABC):
    @abc.abstractmethod
    def create(self, *, workspace_id: str, name: str, labels: dict[str, str], token_id: str) -> EdgeNode:
        """Raises ConflictError when the name exists in the workspace."""

    @abc.abstractmethod
    def get(self, workspace_id: str, node_id: str) -> EdgeNode:
        """Raises NotFoundError (another workspace's node too)."""

    @abc.abstractmethod
    def delete(self, workspace_id: str, node_id: str) -> EdgeNode:
        """Remove the node; returns it (its token is the caller's to revoke). Raises NotFoundError."""

    @abc.abstractmethod
    def touch(self, node_id: str) -> None:
        """Record that the node called now (``last_seen_at``)."""

    @abc.abstractmethod
    def report(self, node_id: str, *, address: str | None, requests: int, errors: int) -> None:
        """A status report (a heartbeat too): its address now, and requests and errors to add."""

    @abc.abstractmethod
    def list(self, workspace_id: str) -> builtins.list[EdgeNode]:
        """By name."""
