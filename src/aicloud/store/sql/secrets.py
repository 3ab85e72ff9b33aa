"""Secrets: encrypted values, unique by name in a workspace. The store never sees plaintext."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aicloud.entities import Secret
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store.base import SecretStore
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import SecretRow


def _entity(row: SecretRow, *, with_ciphertext: bool) -> Secret:
    return Secret(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        created_at=row.created_at,
        ciphertext=bytes(row.ciphertext) if with_ciphertext else b"",
    )


class SqlSecretStore(SecretStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, workspace_id: str, name: str, ciphertext: bytes) -> Secret:
        def conflict() -> ConflictError:
            return ConflictError(f"secret {name!r} already exists in this workspace", details={"name": name})

        def tx(session: Session) -> Secret:
            existing = session.scalar(
                select(SecretRow.id).where(SecretRow.workspace_id == workspace_id, SecretRow.name == name)
            )
            if existing is not None:
                raise conflict()
            row = SecretRow(
                id=ids.new_id(ids.SECRET),
                workspace_id=workspace_id,
                name=name,
                ciphertext=bytes(ciphertext),
                created_at=ids.utcnow(),
            )
            session.add(row)
            session.flush()
            return _entity(row, with_ciphertext=True)

        return self._db.run(
            tx, conflict=conflict, missing=lambda: NotFoundError.of("workspace", workspace_id)
        )

    def get(self, workspace_id: str, name: str) -> Secret:
        def tx(session: Session) -> Secret:
            row = session.scalar(
                select(SecretRow).where(SecretRow.workspace_id == workspace_id, SecretRow.name == name)
            )
            if row is None:
                raise NotFoundError.of("secret", name)
            return _entity(row, with_ciphertext=True)

        return self._db.run(tx, write=False)

    def delete(self, workspace_id: str, name: str) -> None:
        def tx(session: Session) -> None:
            result = session.execute(
                delete(SecretRow).where(SecretRow.workspace_id == workspace_id, SecretRow.name == name)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFoundError.of("secret", name)

        self._db.run(tx)

    def all_ciphertexts(self) -> list[tuple[str, bytes]]:
        def tx(session: Session) -> list[tuple[str, bytes]]:
            rows = session.execute(select(SecretRow.id, SecretRow.ciphertext).order_by(SecretRow.id))
            return [(r.id, bytes(r.ciphertext)) for r in rows]

        return self._db.run(tx, write=False)

    def replace_ciphertext(self, secret_id: str, ciphertext: bytes) -> None:
        def tx(session: Session) -> None:
            result = session.execute(
                update(SecretRow)
                .where(SecretRow.id == secret_id)
                .values(ciphertext=bytes(ciphertext))
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFoundError.of("secret", secret_id)

        self._db.run(tx)

    # Last in the class: below it, ``list`` would name this method in annotations.
    def list(self, workspace_id: str) -> list[Secret]:
        def tx(session: Session) -> list[Secret]:
            rows = session.execute(
                select(SecretRow.id, SecretRow.workspace_id, SecretRow.name, SecretRow.created_at)
                .where(SecretRow.workspace_id == workspace_id)
                .order_by(SecretRow.name)
            )
            return [
                Secret(id=r.id, workspace_id=r.workspace_id, name=r.name, created_at=r.created_at)
                for r in rows
            ]

        return self._db.run(tx, write=False)
