"""Blob references: one ``blob_refs`` row per (digest, workspace, owner kind, owner id).

Blobs are content-addressed and shared between workspaces, so a blob may be removed only when
no reference of any kind, in any workspace, is left. Every store that keeps a digest (dataset
and model versions, jobs, deployments) adds its references with ``add_refs`` in the
transaction that writes the owner, and removes them with ``release_refs``, which in the same
transaction answers which of their digests nothing references any more.

On PostgreSQL both take a transaction-scoped advisory lock per digest (in sorted order), so
a release that finds a digest unreferenced and a concurrent add of the same digest are
ordered: the add either commits first (and the release sees it) or waits for the release to
commit. SQLite write transactions are already serial (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicloud.entities import BlobOwner
from aicloud.entities.core import ZOO_WORKSPACE_ID
from aicloud.errors import NotFoundError
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import BlobRefRow
from aicloud.store.training import BlobRefStore


def _lock_key(digest: str) -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock`` (any digest string maps to one)."""
    return int.from_bytes(hashlib.sha256(digest.encode()).digest()[:8], "big", signed=True)


def lock_digests(session: Session, digests: Iterable[str]) -> None:
    """Order this transaction against every other that adds or releases these digests."""
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite: writers are serial
    for key in sorted({_lock_key(d) for d in digests}):
        session.execute(select(func.pg_advisory_xact_lock(key)))


def add_refs(
    session: Session, workspace_id: str, owner: BlobOwner, owner_id: str, digests: Iterable[str]
) -> None:
    """Reference ``digests`` from the owner, inside the caller's transaction (idempotent)."""
    wanted = sorted({d for d in digests if d})
    if not wanted:
        return
    lock_digests(session, wanted)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now = ids.utcnow()
    rows = [
        {
            "digest": d,
            "workspace_id": workspace_id,
            "owner_kind": BlobOwner(owner).value,
            "owner_id": owner_id,
            "created_at": now,
        }
        for d in wanted
    ]
    session.execute(
        insert(BlobRefRow)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["digest", "workspace_id", "owner_kind", "owner_id"])
    )


def release_refs(
    session: Session, workspace_id: str, owner: BlobOwner, owner_ids: Iterable[str]
) -> list[str]:
    """Remove the owners' references; the digests they held that no reference is left to, sorted.

    The caller removes those blobs (after its transaction commits).
    """
    owned = [i for i in owner_ids]
    if not owned:
        return []
    mine = (
        BlobRefRow.workspace_id == workspace_id,
        BlobRefRow.owner_kind == BlobOwner(owner).value,
        BlobRefRow.owner_id.in_(owned),
    )
    digests = set(session.scalars(select(BlobRefRow.digest).where(*mine).distinct()))
    if not digests:
        return []
    lock_digests(session, digests)
    session.execute(delete(BlobRefRow).where(*mine).execution_options(synchronize_session=False))
    still_used = set(
        session.scalars(select(BlobRefRow.digest).where(BlobRefRow.digest.in_(digests)).distinct())
    )
    return sorted(digests - still_used)


class SqlBlobRefStore(BlobRefStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self, workspace_id: str, digest: str, owner: BlobOwner = BlobOwner.UPLOAD, owner_id: str = ""
    ) -> None:
        self._db.run(
            lambda session: add_refs(session, workspace_id, owner, owner_id, [digest]),
            missing=lambda: NotFoundError.of("workspace", workspace_id),
        )

    def held(self, workspace_id: str) -> list[tuple[str, datetime]]:
        query = (
            select(BlobRefRow.digest, func.min(BlobRefRow.created_at))
            .where(BlobRefRow.workspace_id == workspace_id)
            .group_by(BlobRefRow.digest)
            .order_by(BlobRefRow.digest)
        )
        return self._db.run(lambda session: [(d, t) for d, t in session.execute(query)], write=False)

    def owns(self, workspace_id: str, digest: str) -> bool:
        def tx(session: Session) -> bool:
            query = select(BlobRefRow.digest).where(  # the zoo's files are every workspace's to read
                BlobRefRow.digest == digest, BlobRefRow.workspace_id.in_((workspace_id, ZOO_WORKSPACE_ID))
            )
            return session.scalar(query.limit(1)) is not None

        return self._db.run(tx, write=False)

    def in_use(self, digest: str) -> bool:
        def tx(session: Session) -> bool:
            return (
                session.scalar(select(BlobRefRow.digest).where(BlobRefRow.digest == digest).limit(1))
                is not None
            )

        return self._db.run(tx, write=False)

    def release(self, workspace_id: str, owner: BlobOwner, owner_id: str) -> list[str]:
        return self._db.run(lambda session: release_refs(session, workspace_id, owner, [owner_id]))
