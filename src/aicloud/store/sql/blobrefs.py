"""Blob ownership: which workspace uploaded which blob (one row per workspace and digest)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicloud.errors import NotFoundError
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import BlobRefRow
from aicloud.store.training import BlobRefStore


class SqlBlobRefStore(BlobRefStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, workspace_id: str, digest: str, size: int) -> None:
        """Idempotent: a second upload of the same blob by the same workspace changes nothing."""
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        statement = (
            insert(BlobRefRow)
            .values(workspace_id=workspace_id, digest=digest, size_bytes=size, created_at=ids.utcnow())
            .on_conflict_do_nothing(index_elements=["workspace_id", "digest"])
        )

        def tx(session: Session) -> None:
            session.execute(statement)

        self._db.run(tx, missing=lambda: NotFoundError.of("workspace", workspace_id))

    def owns(self, workspace_id: str, digest: str) -> bool:
        def tx(session: Session) -> bool:
            query = select(BlobRefRow.digest).where(
                BlobRefRow.workspace_id == workspace_id, BlobRefRow.digest == digest
            )
            return session.scalar(query) is not None

        return self._db.run(tx, write=False)
