"""Workspaces: tenants, unique by name."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.entities import Workspace
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store.base import WorkspaceStore
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import WorkspaceRow


def _entity(row: WorkspaceRow) -> Workspace:
    return Workspace(id=row.id, name=row.name, created_at=row.created_at)


class SqlWorkspaceStore(WorkspaceStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, name: str, workspace_id: str | None = None) -> Workspace:
        def conflict() -> ConflictError:
            return ConflictError(f"workspace {name!r} already exists", details={"name": name})

        def tx(session: Session) -> Workspace:
            if session.scalar(select(WorkspaceRow.id).where(WorkspaceRow.name == name)) is not None:
                raise conflict()
            if workspace_id is not None and session.get(WorkspaceRow, workspace_id) is not None:
                raise conflict()
            row = WorkspaceRow(
                id=workspace_id or ids.new_id(ids.WORKSPACE), name=name, created_at=ids.utcnow()
            )
            session.add(row)
            session.flush()
            return _entity(row)

        return self._db.run(tx, conflict=conflict)

    def get(self, workspace_id: str) -> Workspace:
        def tx(session: Session) -> Workspace:
            row = session.get(WorkspaceRow, workspace_id)
            if row is None:
                raise NotFoundError.of("workspace", workspace_id)
            return _entity(row)

        return self._db.run(tx, write=False)

    def get_by_name(self, name: str) -> Workspace | None:
        def tx(session: Session) -> Workspace | None:
            row = session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == name))
            return None if row is None else _entity(row)

        return self._db.run(tx, write=False)

    def list(self) -> list[Workspace]:
        def tx(session: Session) -> list[Workspace]:
            rows = session.scalars(select(WorkspaceRow).order_by(WorkspaceRow.name))
            return [_entity(row) for row in rows]

        return self._db.run(tx, write=False)
