"""Edge nodes: unique by name in a workspace; each holds the id of its own token."""

from __future__ import annotations

import builtins

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aicloud.entities.edge import EdgeNode
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store.edge import EdgeNodeStore
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import EdgeNodeRow


def _entity(row: EdgeNodeRow) -> EdgeNode:
    return EdgeNode(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        token_id=row.token_id,
        created_at=row.created_at,
        labels={str(k): str(v) for k, v in (row.labels or {}).items()},
        last_seen_at=row.last_seen_at,
        address=row.address,
        requests=int(row.requests or 0),
        errors=int(row.errors or 0),
    )


class SqlEdgeNodeStore(EdgeNodeStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, *, workspace_id: str, name: str, labels: dict[str, str], token_id: str) -> EdgeNode:
        def conflict() -> ConflictError:
            return ConflictError(
                f"edge node {name!r} already exists in this workspace", details={"name": name}
            )

        def tx(session: Session) -> EdgeNode:
            taken = session.scalar(
                select(EdgeNodeRow.id).where(
                    EdgeNodeRow.workspace_id == workspace_id, EdgeNodeRow.name == name
                )
            )
            if taken is not None:
                raise conflict()
            row = EdgeNodeRow(
                id=ids.new_id(ids.EDGE_NODE),
                workspace_id=workspace_id,
                name=name,
                labels=dict(labels),
                token_id=token_id,
                created_at=ids.utcnow(),
                last_seen_at=None,
                requests=0,
                errors=0,
            )
            session.add(row)
            session.flush()
            return _entity(row)

        return self._db.run(
            tx, conflict=conflict, missing=lambda: NotFoundError.of("workspace", workspace_id)
        )

    def get(self, workspace_id: str, node_id: str) -> EdgeNode:
        def tx(session: Session) -> EdgeNode:
            row = session.scalar(
                select(EdgeNodeRow).where(EdgeNodeRow.workspace_id == workspace_id, EdgeNodeRow.id == node_id)
            )
            if row is None:
                raise NotFoundError.of("edge node", node_id)
            return _entity(row)

        return self._db.run(tx, write=False)

    def delete(self, workspace_id: str, node_id: str) -> EdgeNode:
        def tx(session: Session) -> EdgeNode:
            row = session.scalar(
                select(EdgeNodeRow).where(EdgeNodeRow.workspace_id == workspace_id, EdgeNodeRow.id == node_id)
            )
            if row is None:
                raise NotFoundError.of("edge node", node_id)
            node = _entity(row)
            session.execute(delete(EdgeNodeRow).where(EdgeNodeRow.id == node_id))
            return node

        return self._db.run(tx)

    def touch(self, node_id: str) -> None:
        def tx(session: Session) -> None:
            session.execute(
                update(EdgeNodeRow)
                .where(EdgeNodeRow.id == node_id)
                .values(last_seen_at=ids.utcnow())
                .execution_options(synchronize_session=False)
            )

        self._db.run(tx)

    def report(self, node_id: str, *, address: str | None, requests: int, errors: int) -> None:
        def tx(session: Session) -> None:
            session.execute(
                update(EdgeNodeRow)
                .where(EdgeNodeRow.id == node_id)
                .values(
                    last_seen_at=ids.utcnow(),
                    address=address,
                    requests=EdgeNodeRow.requests + requests,
                    errors=EdgeNodeRow.errors + errors,
                )
                .execution_options(synchronize_session=False)
            )

        self._db.run(tx)

    # Last in the class: below it, ``list`` would name this method in annotations.
    def list(self, workspace_id: str) -> builtins.list[EdgeNode]:
        def tx(session: Session) -> builtins.list[EdgeNode]:
            rows = session.scalars(
                select(EdgeNodeRow).where(EdgeNodeRow.workspace_id == workspace_id).order_by(EdgeNodeRow.name)
            )
            return [_entity(r) for r in rows]

        return self._db.run(tx, write=False)
