"""The metadata store interface. Backends: SQL (SQLite or PostgreSQL) in ``store.sql``.

Stores return entities (``aicloud.entities``), never ORM rows. Every method is its
own transaction. Names and ids arrive already validated by the server.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Any

from aicloud.entities import DatasetSummary, DatasetVersion, Role, Secret, Token, Workspace
from aicloud.store.alerts import AlertStore
from aicloud.store.edge import EdgeNodeStore
from aicloud.store.serving import DeploymentStore
from aicloud.store.tracking import TrackingStore
from aicloud.store.training import BlobRefStore, JobStore, ModelStore, RunStore


class WorkspaceStore(abc.ABC):
    @abc.abstractmethod
    def create(self, name: str, workspace_id: str | None = None) -> Workspace:
        """Raises ConflictError when the name (or the given id) is taken."""

    @abc.abstractmethod
    def get(self, workspace_id: str) -> Workspace:
        """Raises NotFoundError."""

    @abc.abstractmethod
    def get_by_name(self, name: str) -> Workspace | None: ...

    @abc.abstractmethod
    def list(self) -> list[Workspace]: ...


class TokenStore(abc.ABC):
    @abc.abstractmethod
    def create(
        self,
        *,
        token_id: str,
        workspace_id: str,
        name: str,
        role: Role,
        secret_hash: str,
        scope: str | None = None,
        expires_at: datetime | None = None,
    ) -> Token:
        """Raises ConflictError when the name is taken in the workspace (a database constraint,
        so of concurrent creates with one name exactly one succeeds)."""

    @abc.abstractmethod
    def get(self, token_id: str) -> Token | None:
        """Look a token up by id across workspaces (authentication)."""

    @abc.abstractmethod
    def list(self, workspace_id: str) -> list[Token]: ...

    @abc.abstractmethod
    def delete(self, workspace_id: str, token_id: str) -> None:
        """Raises NotFoundError when no such token in that workspace."""


class DatasetStore(abc.ABC):
    @abc.abstractmethod
    def create_version(
        self,
        *,
        workspace_id: str,
        name: str,
        format: str,
        filename: str,
        blob_digest: str,
        size_bytes: int,
        num_rows: int,
        schema: list[dict[str, Any]],
        stats: dict[str, dict[str, Any]],
        lineage: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """Create the dataset on first use and append the next version number, atomically.

        Safe under concurrency: N concurrent calls for one name yield versions 1..N,
        never an error about a locked database.
        """

    @abc.abstractmethod
    def get_version(self, workspace_id: str, name: str, version: int | None = None) -> DatasetVersion:
        """The given version, or the latest when ``version`` is None. Raises NotFoundError."""

    @abc.abstractmethod
    def get_version_by_id(self, workspace_id: str, version_id: str) -> DatasetVersion:
        """Raises NotFoundError (also for a version of another workspace)."""

    @abc.abstractmethod
    def list_datasets(
        self, workspace_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[DatasetSummary]:
        """Newest first (by creation, ties by id): ``limit`` of them (None: all) after ``offset``."""

    @abc.abstractmethod
    def count_datasets(self, workspace_id: str) -> int:
        """How many ``list_datasets`` would return without a limit."""

    @abc.abstractmethod
    def list_versions(
        self,
        workspace_id: str,
        name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[DatasetVersion]:
        """Oldest first (newest first with ``newest_first``), ``limit`` of them (None: all) after
        ``offset``. Raises NotFoundError when the dataset does not exist."""

    @abc.abstractmethod
    def count_versions(self, workspace_id: str, name: str) -> int:
        """How many versions the dataset has. Raises NotFoundError when it does not exist."""

    @abc.abstractmethod
    def delete_dataset(self, workspace_id: str, name: str) -> list[str]:
        """Remove a dataset, all its versions and their blob references; returns the digests no
        reference of any kind, in any workspace, holds any more (decided in the same transaction)."""


class SecretStore(abc.ABC):
    @abc.abstractmethod
    def create(self, workspace_id: str, name: str, ciphertext: bytes) -> Secret:
        """Raises ConflictError when the name exists in the workspace."""

    @abc.abstractmethod
    def get(self, workspace_id: str, name: str) -> Secret:
        """With ``ciphertext``. Raises NotFoundError."""

    @abc.abstractmethod
    def delete(self, workspace_id: str, name: str) -> None: ...

    @abc.abstractmethod
    def all_ciphertexts(self) -> list[tuple[str, bytes]]:
        """(secret id, ciphertext) for every secret in every workspace, for key rotation."""

    @abc.abstractmethod
    def replace_ciphertext(self, secret_id: str, ciphertext: bytes) -> None: ...

    @abc.abstractmethod
    def list(self, workspace_id: str) -> list[Secret]:
        """Without ciphertext."""


class MetadataStore(abc.ABC):
    """All resource stores over one database."""

    workspaces: WorkspaceStore
    tokens: TokenStore
    datasets: DatasetStore
    secrets: SecretStore
    jobs: JobStore
    runs: RunStore
    models: ModelStore
    blob_refs: BlobRefStore
    deployments: DeploymentStore
    tracking: TrackingStore
    edge_nodes: EdgeNodeStore
    alerts: AlertStore

    @abc.abstractmethod
    def close(self) -> None: ...
