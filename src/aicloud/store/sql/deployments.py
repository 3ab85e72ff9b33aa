"""Deployments (desired serving state) and their replicas (actual state).

``update_spec`` replaces the spec and bumps ``generation`` in one ``UPDATE ... SET
generation = generation + 1 ... RETURNING``, so two concurrent spec changes make two
generations and never lose a bump. ``delete`` and ``remove_replica`` are idempotent: the
deployment controller may repeat them after its own restart.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aicloud.entities import BlobOwner
from aicloud.entities.serving import Deployment, DeploymentStatus, Replica, ReplicaState
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store.serving import DeploymentStore
from aicloud.store.sql import ids
from aicloud.store.sql.blobrefs import add_refs, release_refs
from aicloud.store.sql.session import Database, count_rows, json_normalize
from aicloud.store.sql.tables import DeploymentRow, ReplicaRow, ReplicaUsageRow

DEPLOYMENT_PREFIX = "dep"
REPLICA_PREFIX = "rep"


def _deployment(row: DeploymentRow) -> Deployment:
    return Deployment(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        spec=row.spec,
        status=DeploymentStatus(row.status),
        generation=row.generation,
        desired_replicas=row.desired_replicas,
        created_at=row.created_at,
        updated_at=row.updated_at,
        model_version_id=row.model_version_id,
        message=row.message,
        traffic=dict(row.traffic) if row.traffic else None,
    )


def _replica(row: ReplicaRow) -> Replica:
    return Replica(
        id=row.id,
        deployment_id=row.deployment_id,
        generation=row.generation,
        state=ReplicaState(row.state),
        port=row.port,
        created_at=row.created_at,
        handle=row.handle or {},
        ready_at=row.ready_at,
        message=row.message,
        key_sealed=bytes(row.key_sealed) if row.key_sealed is not None else None,
        model_version_id=row.model_version_id,
        node_id=row.node_id,
    )


def _reference_code(session: Session, row: DeploymentRow) -> None:
    """A service deployment references its code archive (the spec's current one only)."""
    release_refs(session, row.workspace_id, BlobOwner.DEPLOYMENT, [row.id])
    code = (row.spec.get("service") or {}).get("code") if isinstance(row.spec, dict) else None
    if isinstance(code, str) and code:
        add_refs(session, row.workspace_id, BlobOwner.DEPLOYMENT, row.id, [code])


class SqlDeploymentStore(DeploymentStore):
    def __init__(self, db: Database) -> None:
        self._db = db

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
        spec = json_normalize(spec)

        def tx(session: Session) -> Deployment:
            now = ids.utcnow()
            row = DeploymentRow(
                id=ids.new_id(DEPLOYMENT_PREFIX),
                workspace_id=workspace_id,
                name=name,
                spec=spec,
                status=DeploymentStatus.PENDING.value,
                generation=1,
                desired_replicas=desired,
                model_version_id=model_version_id,
                traffic=traffic or None,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            _reference_code(session, row)
            return _deployment(row)

        return self._db.run(
            tx,
            conflict=lambda: ConflictError(
                f"deployment {name!r} already exists in this workspace; change it with `aicloud deploy "
                f"update {name} --model ...` (SDK: Deployment.update) or pick another name",
                details={"name": name},
            ),
            missing=lambda: NotFoundError.of("workspace", workspace_id),
        )

    def get(self, workspace_id: str, name: str) -> Deployment:
        def tx(session: Session) -> Deployment:
            query = select(DeploymentRow).where(
                DeploymentRow.workspace_id == workspace_id, DeploymentRow.name == name
            )
            row = session.scalar(query)
            if row is None:
                raise NotFoundError.of("deployment", name)
            return _deployment(row)

        return self._db.run(tx, write=False)

    def get_any(self, deployment_id: str) -> Deployment:
        def tx(session: Session) -> Deployment:
            row = session.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFoundError.of("deployment", deployment_id)
            return _deployment(row)

        return self._db.run(tx, write=False)

    def list(
        self,
        workspace_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        model_version_id: str | None = None,
    ) -> builtins.list[Deployment]:
        where = [DeploymentRow.workspace_id == workspace_id]
        if model_version_id is not None:
            where.append(DeploymentRow.model_version_id == model_version_id)

        def tx(session: Session) -> builtins.list[Deployment]:
            query = (
                select(DeploymentRow)
                .where(*where)
                .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_deployment(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

    def count(self, workspace_id: str) -> int:
        def tx(session: Session) -> int:
            return count_rows(session, DeploymentRow, DeploymentRow.workspace_id == workspace_id)

        return self._db.run(tx, write=False)

    def list_all(self) -> builtins.list[Deployment]:
        def tx(session: Session) -> builtins.list[Deployment]:
            query = select(DeploymentRow).order_by(DeploymentRow.created_at, DeploymentRow.id)
            return [_deployment(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

    def _update(self, where: Any, changes: dict[str, Any], missing: str) -> Deployment:
        changes = {**changes, "updated_at": ids.utcnow()}

        def tx(session: Session) -> Deployment:
            statement = (
                update(DeploymentRow)
                .where(*where)
                .values(changes)
                .returning(DeploymentRow)
                .execution_options(synchronize_session=False)
            )
            row = session.scalars(statement).one_or_none()
            if row is None:
                raise NotFoundError.of("deployment", missing)
            if "spec" in changes:
                _reference_code(session, row)
            return _deployment(row)

        return self._db.run(tx)

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
        changes: dict[str, Any] = {
            "spec": json_normalize(spec),
            "model_version_id": model_version_id,
            "traffic": traffic or None,
        }
        if roll:
            changes["generation"] = DeploymentRow.generation + 1
        where = (DeploymentRow.workspace_id == workspace_id, DeploymentRow.name == name)
        return self._update(where, changes, name)

    def set_desired(self, deployment_id: str, desired: int) -> Deployment:
        if desired < 0:
            raise ValueError(f"desired replicas must be >= 0, not {desired}")
        return self._update(
            (DeploymentRow.id == deployment_id,), {"desired_replicas": desired}, deployment_id
        )

    def set_status(
        self,
        deployment_id: str,
        status: DeploymentStatus,
        message: str | None = None,
        *,
        expect: builtins.list[DeploymentStatus] | None = None,
    ) -> Deployment:
        changes = {"status": DeploymentStatus(status).value, "message": message}
        if expect is None:
            return self._update((DeploymentRow.id == deployment_id,), changes, deployment_id)
        expected = [DeploymentStatus(s).value for s in expect]
        where = (DeploymentRow.id == deployment_id, DeploymentRow.status.in_(expected))
        try:
            return self._update(where, changes, deployment_id)
        except NotFoundError:
            return self.get_any(deployment_id)  # in another status (or gone: NotFoundError)

    def delete(self, deployment_id: str) -> None:
        def tx(session: Session) -> None:
            workspace_id = session.scalar(
                select(DeploymentRow.workspace_id).where(DeploymentRow.id == deployment_id)
            )
            _end_usage(session, ReplicaUsageRow.deployment_id == deployment_id)
            session.execute(delete(ReplicaRow).where(ReplicaRow.deployment_id == deployment_id))
            session.execute(delete(DeploymentRow).where(DeploymentRow.id == deployment_id))
            if workspace_id is not None:
                # The code was uploaded (POST /blobs), so that reference keeps the blob.
                release_refs(session, workspace_id, BlobOwner.DEPLOYMENT, [deployment_id])

        self._db.run(tx)

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
        handle = json_normalize(handle)

        def tx(session: Session) -> Replica:
            row = ReplicaRow(
                id=ids.new_id(REPLICA_PREFIX),
                deployment_id=deployment_id,
                generation=generation,
                state=ReplicaState.STARTING.value,
                port=port,
                handle=handle,
                created_at=ids.utcnow(),
                model_version_id=model_version_id,
                node_id=node_id,
            )
            session.add(row)
            session.flush()
            _start_usage(session, row)
            return _replica(row)

        return self._db.run(tx, missing=lambda: NotFoundError.of("deployment", deployment_id))

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
            changes["state"] = ReplicaState(state).value
            if state == ReplicaState.READY:
                changes["ready_at"] = ids.utcnow()
        if handle is not None:
            changes["handle"] = json_normalize(handle)
        if message is not None:
            changes["message"] = message
        if key_sealed is not None:
            changes["key_sealed"] = bytes(key_sealed)
        if port is not None:
            changes["port"] = port

        def tx(session: Session) -> Replica:
            row: ReplicaRow | None
            if changes:
                statement = (
                    update(ReplicaRow)
                    .where(ReplicaRow.id == replica_id)
                    .values(changes)
                    .returning(ReplicaRow)
                    .execution_options(synchronize_session=False)
                )
                row = session.scalars(statement).one_or_none()
            else:
                row = session.get(ReplicaRow, replica_id)
            if row is None:
                raise NotFoundError.of("replica", replica_id)
            return _replica(row)

        return self._db.run(tx)

    def replicas(self, deployment_id: str) -> builtins.list[Replica]:
        def tx(session: Session) -> builtins.list[Replica]:
            query = (
                select(ReplicaRow)
                .where(ReplicaRow.deployment_id == deployment_id)
                .order_by(ReplicaRow.created_at, ReplicaRow.id)
            )
            return [_replica(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

    def node_replicas(self, node_id: str) -> builtins.list[Replica]:
        def tx(session: Session) -> builtins.list[Replica]:
            query = (
                select(ReplicaRow)
                .where(ReplicaRow.node_id == node_id)
                .order_by(ReplicaRow.created_at, ReplicaRow.id)
            )
            return [_replica(row) for row in session.scalars(query)]

        return self._db.run(tx, write=False)

    def remove_replica(self, replica_id: str) -> None:
        def tx(session: Session) -> None:
            _end_usage(session, ReplicaUsageRow.id == replica_id)
            session.execute(delete(ReplicaRow).where(ReplicaRow.id == replica_id))

        self._db.run(tx)

    def replica_usage(
        self, workspace_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[dict[str, Any]]:
        """The workspace's replicas that ran in ``[since, until)``, oldest first. A row still
        open whose replica is gone (its server stopped without retiring it) is closed now."""

        def tx(session: Session) -> builtins.list[dict[str, Any]]:
            orphans = select(ReplicaUsageRow.id).where(
                ReplicaUsageRow.workspace_id == workspace_id,
                ReplicaUsageRow.ended_at.is_(None),
                ~select(ReplicaRow.id).where(ReplicaRow.id == ReplicaUsageRow.id).exists(),
            )
            _end_usage(session, ReplicaUsageRow.id.in_(orphans.scalar_subquery()))
            query = select(ReplicaUsageRow).where(ReplicaUsageRow.workspace_id == workspace_id)
            if until is not None:
                query = query.where(ReplicaUsageRow.started_at < until)
            if since is not None:
                query = query.where((ReplicaUsageRow.ended_at.is_(None)) | (ReplicaUsageRow.ended_at > since))
            rows = session.scalars(query.order_by(ReplicaUsageRow.started_at, ReplicaUsageRow.id))
            return [
                {
                    "replica_id": r.id,
                    "deployment_id": r.deployment_id,
                    "deployment": r.deployment_name,
                    "cpus": r.cpus,
                    "gpus": r.gpus,
                    "memory_mb": r.memory_mb,
                    "started_at": r.started_at,
                    "ended_at": r.ended_at,
                }
                for r in rows
            ]

        return self._db.run(tx)


def _start_usage(session: Session, replica: ReplicaRow) -> None:
    """A usage row for a replica just added: what its deployment's spec reserves, from now.
    A replica placed on an edge node runs on that node's own machine: it is not charged."""
    dep = session.get(DeploymentRow, replica.deployment_id)
    if dep is None or replica.node_id is not None:
        return
    spec = dep.spec or {}
    limits = spec.get("limits") if isinstance(spec.get("limits"), dict) else {}
    memory = limits.get("memory_mb") if limits else None
    session.add(
        ReplicaUsageRow(
            id=replica.id,
            workspace_id=dep.workspace_id,
            deployment_id=dep.id,
            deployment_name=dep.name,
            cpus=_whole(spec.get("cpus"), 1),
            gpus=_whole(spec.get("gpus"), 0),
            memory_mb=_whole(memory, 0) or None,
            started_at=replica.created_at,
        )
    )


def _whole(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return max(int(value), 0)


def _end_usage(session: Session, where: Any) -> None:
    session.execute(
        update(ReplicaUsageRow)
        .where(where, ReplicaUsageRow.ended_at.is_(None))
        .values(ended_at=ids.utcnow())
        .execution_options(synchronize_session=False)
    )
