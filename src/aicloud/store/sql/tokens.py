"""Bearer tokens: only the hash of the secret is stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from aicloud.entities import Role, Token
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store.base import TokenStore
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import TokenRow


def _entity(row: TokenRow) -> Token:
    return Token(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        role=Role(row.role),
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        scope=row.scope,
        expires_at=row.expires_at,
    )


class SqlTokenStore(TokenStore):
    def __init__(self, db: Database) -> None:
        self._db = db

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
        def tx(session: Session) -> Token:
            row = TokenRow(
                id=token_id,
                workspace_id=workspace_id,
                name=name,
                role=Role(role).value,
                secret_hash=secret_hash,
                scope=scope,
                expires_at=expires_at,
                created_at=ids.utcnow(),
            )
            session.add(row)
            session.flush()
            return _entity(row)

        return self._db.run(
            tx,
            # the unique (workspace_id, name) constraint: concurrent creates get one winner
            conflict=lambda: ConflictError(
                f"a token named {name!r} already exists in this workspace", details={"name": name}
            ),
            missing=lambda: NotFoundError.of("workspace", workspace_id),
        )

    def get(self, token_id: str) -> Token | None:
        def tx(session: Session) -> Token | None:
            row = session.get(TokenRow, token_id)
            return None if row is None else _entity(row)

        return self._db.run(tx, write=False)

    def list(self, workspace_id: str) -> list[Token]:
        def tx(session: Session) -> list[Token]:
            rows = session.scalars(
                select(TokenRow)
                .where(TokenRow.workspace_id == workspace_id)
                .order_by(TokenRow.created_at, TokenRow.id)
            )
            return [_entity(row) for row in rows]

        return self._db.run(tx, write=False)

    def delete(self, workspace_id: str, token_id: str) -> None:
        def tx(session: Session) -> None:
            result = session.execute(
                delete(TokenRow).where(TokenRow.workspace_id == workspace_id, TokenRow.id == token_id)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFoundError.of("token", token_id)

        self._db.run(tx)
