"""Datasets and their immutable versions.

A dataset row carries ``last_version``, the counter that numbers its versions. Creating a
version is one transaction: insert the dataset if missing (``ON CONFLICT DO NOTHING``, so a
concurrent first upload is not an error), bump the counter with ``UPDATE ... RETURNING``
(the row lock orders concurrent writers on PostgreSQL; SQLite writers are already ordered
by ``BEGIN IMMEDIATE``), then insert the version with the number it got.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, select
from sqlalchemy.orm import Session

from aicloud.entities import BlobOwner, DatasetSummary, DatasetVersion, VersionStatus
from aicloud.errors import NotFoundError
from aicloud.store.base import DatasetStore
from aicloud.store.sql import ids
from aicloud.store.sql.blobrefs import add_refs, release_refs
from aicloud.store.sql.counters import next_version
from aicloud.store.sql.session import Database, count_rows, json_normalize
from aicloud.store.sql.tables import DatasetRow, DatasetVersionRow


def _entity(row: DatasetVersionRow, name: str) -> DatasetVersion:
    return DatasetVersion(
        id=row.id,
        workspace_id=row.workspace_id,
        name=name,
        version=row.version,
        format=row.format,
        filename=row.filename,
        blob_digest=row.blob_digest,
        size_bytes=row.size_bytes,
        num_rows=row.num_rows,
        schema=row.schema,
        stats=row.stats,
        created_at=row.created_at,
        lineage=row.lineage or {},
        status=VersionStatus(row.status),
    )


def _version_not_found(name: str, version: int) -> NotFoundError:
    return NotFoundError(
        f"dataset {name!r} has no version {version}",
        details={"kind": "dataset version", "name": name, "version": version},
    )


def _find_dataset(session: Session, workspace_id: str, name: str) -> DatasetRow:
    row = session.scalar(
        select(DatasetRow).where(DatasetRow.workspace_id == workspace_id, DatasetRow.name == name)
    )
    if row is None:
        raise NotFoundError.of("dataset", name)
    return row


class SqlDatasetStore(DatasetStore):
    def __init__(self, db: Database) -> None:
        self._db = db

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
        schema = json_normalize(schema)
        stats = json_normalize(stats)
        lineage = json_normalize(lineage or {})

        def tx(session: Session) -> DatasetVersion:
            now = ids.utcnow()
            dataset_id, version = self._next_version(session, workspace_id, name, now)
            row = DatasetVersionRow(
                id=ids.new_id(ids.DATASET_VERSION),
                dataset_id=dataset_id,
                workspace_id=workspace_id,
                version=version,
                format=format,
                filename=filename,
                blob_digest=blob_digest,
                size_bytes=size_bytes,
                num_rows=num_rows,
                schema=schema,
                stats=stats,
                lineage=lineage,
                status=VersionStatus.READY.value,
                created_at=now,
            )
            session.add(row)
            session.flush()
            add_refs(session, workspace_id, BlobOwner.DATASET_VERSION, row.id, [blob_digest])
            return _entity(row, name)

        return self._db.run(tx, missing=lambda: NotFoundError.of("workspace", workspace_id))

    def _next_version(self, session: Session, workspace_id: str, name: str, now: Any) -> tuple[str, int]:
        """Create the row if missing and take the next version number (see ``counters``)."""
        return next_version(session, DatasetRow, ids.DATASET, workspace_id, name, now)

    def get_version(self, workspace_id: str, name: str, version: int | None = None) -> DatasetVersion:
        def tx(session: Session) -> DatasetVersion:
            # One joined query on the hot path; the error path finds out what is missing.
            query = (
                select(DatasetVersionRow, DatasetRow.name)
                .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id)
                .where(DatasetRow.workspace_id == workspace_id, DatasetRow.name == name)
            )
            if version is None:
                query = query.order_by(DatasetVersionRow.version.desc()).limit(1)
            else:
                query = query.where(DatasetVersionRow.version == version)
            found = session.execute(query).one_or_none()
            if found is None:
                _find_dataset(session, workspace_id, name)
                if version is None:
                    raise NotFoundError.of("dataset", name)
                raise _version_not_found(name, version)
            return _entity(found[0], found[1])

        return self._db.run(tx, write=False)

    def get_version_by_id(self, workspace_id: str, version_id: str) -> DatasetVersion:
        def tx(session: Session) -> DatasetVersion:
            found = session.execute(
                select(DatasetVersionRow, DatasetRow.name)
                .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id)
                .where(DatasetVersionRow.id == version_id, DatasetVersionRow.workspace_id == workspace_id)
            ).one_or_none()
            if found is None:
                raise NotFoundError.of("dataset version", version_id)
            return _entity(found[0], found[1])

        return self._db.run(tx, write=False)

    def list_datasets(
        self, workspace_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[DatasetSummary]:
        def tx(session: Session) -> list[DatasetSummary]:
            # The page of datasets first, then the counts of its versions only.
            page = (
                select(DatasetRow.id)
                .where(DatasetRow.workspace_id == workspace_id)
                .order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
                .offset(offset)
                .limit(limit)
                .subquery()
            )
            counts = (
                select(
                    DatasetVersionRow.dataset_id,
                    func.max(DatasetVersionRow.version).label("latest"),
                    func.count().label("n"),
                )
                .join(page, page.c.id == DatasetVersionRow.dataset_id)
                .group_by(DatasetVersionRow.dataset_id)
                .subquery()
            )
            rows = session.execute(
                select(
                    DatasetRow.name, DatasetRow.created_at, DatasetRow.updated_at, counts.c.latest, counts.c.n
                )
                .join(counts, counts.c.dataset_id == DatasetRow.id)
                .order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
            )
            return [_summary(r) for r in rows]

        return self._db.run(tx, write=False)

    def count_datasets(self, workspace_id: str) -> int:
        def tx(session: Session) -> int:
            return count_rows(session, DatasetRow, DatasetRow.workspace_id == workspace_id)

        return self._db.run(tx, write=False)

    def list_versions(
        self,
        workspace_id: str,
        name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[DatasetVersion]:
        order = DatasetVersionRow.version.desc() if newest_first else DatasetVersionRow.version

        def tx(session: Session) -> list[DatasetVersion]:
            dataset = _find_dataset(session, workspace_id, name)
            rows = session.scalars(
                select(DatasetVersionRow)
                .where(DatasetVersionRow.dataset_id == dataset.id)
                .order_by(order)
                .offset(offset)
                .limit(limit)
            )
            return [_entity(row, dataset.name) for row in rows]

        return self._db.run(tx, write=False)

    def count_versions(self, workspace_id: str, name: str) -> int:
        def tx(session: Session) -> int:
            dataset = _find_dataset(session, workspace_id, name)
            return count_rows(session, DatasetVersionRow, DatasetVersionRow.dataset_id == dataset.id)

        return self._db.run(tx, write=False)

    def delete_dataset(self, workspace_id: str, name: str) -> list[str]:
        def tx(session: Session) -> list[str]:
            query = select(DatasetRow).where(DatasetRow.workspace_id == workspace_id, DatasetRow.name == name)
            dataset = session.scalar(query.with_for_update())
            if dataset is None:
                raise NotFoundError.of("dataset", name)
            versions = list(
                session.scalars(
                    select(DatasetVersionRow.id).where(DatasetVersionRow.dataset_id == dataset.id)
                )
            )
            session.execute(delete(DatasetVersionRow).where(DatasetVersionRow.dataset_id == dataset.id))
            session.execute(delete(DatasetRow).where(DatasetRow.id == dataset.id))
            return release_refs(session, workspace_id, BlobOwner.DATASET_VERSION, versions)

        return self._db.run(tx)


def _summary(row: Row[Any]) -> DatasetSummary:
    return DatasetSummary(
        name=row.name,
        latest_version=int(row.latest),
        num_versions=int(row.n),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
