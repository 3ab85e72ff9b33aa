"""The model registry: models, their immutable versions, and aliases that point at versions.

Versions are numbered as dataset versions are (see ``datasets``): the model row's
``last_version`` is bumped with ``UPDATE ... RETURNING`` inside the transaction that inserts
the version, after an ``INSERT ... ON CONFLICT DO NOTHING`` of the model. An alias is one row
per (model, alias), moved with an upsert, so it points at exactly one version at any time.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicloud.entities import BlobOwner, Model, ModelVersion
from aicloud.entities.core import ZOO_WORKSPACE_ID
from aicloud.errors import NotFoundError
from aicloud.store.sql import ids
from aicloud.store.sql.blobrefs import add_refs
from aicloud.store.sql.counters import next_version
from aicloud.store.sql.session import Database, count_rows, json_normalize
from aicloud.store.sql.tables import ModelAliasRow, ModelRow, ModelVersionRow
from aicloud.store.training import ModelStore

MODEL_PREFIX = "mdl"
MODEL_VERSION_PREFIX = "mv"


def _version_entity(row: ModelVersionRow, name: str, aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        workspace_id=row.workspace_id,
        name=name,
        version=row.version,
        files=row.files,
        signature=row.signature,
        config=row.config,
        metrics=row.metrics,
        lineage=row.lineage or {},
        created_at=row.created_at,
        aliases=sorted(aliases),
    )


def _version_not_found(name: str, version: int) -> NotFoundError:
    return NotFoundError(
        f"model {name!r} has no version {version}",
        details={"kind": "model version", "name": name, "version": version},
    )


def _alias_not_found(name: str, alias: str) -> NotFoundError:
    return NotFoundError(
        f"model {name!r} has no alias {alias!r}",
        details={"kind": "model alias", "name": name, "alias": alias},
    )


def _find_model(session: Session, workspace_id: str, name: str) -> ModelRow:
    row = session.scalar(select(ModelRow).where(ModelRow.workspace_id == workspace_id, ModelRow.name == name))
    if row is None:
        raise NotFoundError.of("model", name)
    return row


def _aliases_of(session: Session, model_id: str, version: int) -> list[str]:
    query = select(ModelAliasRow.alias).where(
        ModelAliasRow.model_id == model_id, ModelAliasRow.version == version
    )
    return list(session.scalars(query))


def _models(session: Session, rows: list[ModelRow]) -> list[Model]:
    """The models of these rows, with their aliases (one query)."""
    aliases: dict[str, dict[str, int]] = defaultdict(dict)
    found = session.execute(
        select(ModelAliasRow.model_id, ModelAliasRow.alias, ModelAliasRow.version)
        .where(ModelAliasRow.model_id.in_([row.id for row in rows]))
        .order_by(ModelAliasRow.alias)
    )
    for model_id, alias, version in found:
        aliases[model_id][alias] = version
    return [
        Model(
            id=row.id,
            workspace_id=row.workspace_id,
            name=row.name,
            created_at=row.created_at,
            latest_version=row.last_version,
            aliases=aliases.get(row.id, {}),
        )
        for row in rows
    ]


class SqlModelStore(ModelStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_version(
        self,
        *,
        workspace_id: str,
        name: str,
        files: dict[str, str],
        signature: dict[str, Any],
        config: dict[str, Any],
        metrics: dict[str, float],
        lineage: dict[str, Any],
    ) -> ModelVersion:
        fields = {
            "files": json_normalize(files),
            "signature": json_normalize(signature),
            "config": json_normalize(config),
            "metrics": json_normalize(metrics),
            "lineage": json_normalize(lineage or {}),
        }

        def tx(session: Session) -> ModelVersion:
            now = ids.utcnow()
            model_id, version = self._next_version(session, workspace_id, name, now)
            row = ModelVersionRow(
                id=ids.new_id(MODEL_VERSION_PREFIX),
                model_id=model_id,
                workspace_id=workspace_id,
                version=version,
                created_at=now,
                **fields,
            )
            session.add(row)
            session.flush()
            add_refs(session, workspace_id, BlobOwner.MODEL_VERSION, row.id, row.files.values())
            return _version_entity(row, name, [])

        return self._db.run(tx, missing=lambda: NotFoundError.of("workspace", workspace_id))

    def _next_version(self, session: Session, workspace_id: str, name: str, now: Any) -> tuple[str, int]:
        """Create the row if missing and take the next version number (see ``counters``)."""
        return next_version(session, ModelRow, MODEL_PREFIX, workspace_id, name, now)

    def get_version(self, workspace_id: str, name: str, version: int | None = None) -> ModelVersion:
        def tx(session: Session) -> ModelVersion:
            query = (
                select(ModelVersionRow)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(ModelRow.workspace_id == workspace_id, ModelRow.name == name)
            )
            if version is None:
                query = query.order_by(ModelVersionRow.version.desc()).limit(1)
            else:
                query = query.where(ModelVersionRow.version == version)
            row = session.scalar(query)
            if row is None:
                _find_model(session, workspace_id, name)
                if version is None:
                    raise NotFoundError.of("model", name)
                raise _version_not_found(name, version)
            return _version_entity(row, name, _aliases_of(session, row.model_id, row.version))

        return self._db.run(tx, write=False)

    def get_version_by_alias(self, workspace_id: str, name: str, alias: str) -> ModelVersion:
        def tx(session: Session) -> ModelVersion:
            row = session.scalar(
                select(ModelVersionRow)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .join(
                    ModelAliasRow,
                    (ModelAliasRow.model_id == ModelVersionRow.model_id)
                    & (ModelAliasRow.version == ModelVersionRow.version),
                )
                .where(
                    ModelRow.workspace_id == workspace_id, ModelRow.name == name, ModelAliasRow.alias == alias
                )
            )
            if row is None:
                _find_model(session, workspace_id, name)
                raise _alias_not_found(name, alias)
            return _version_entity(row, name, _aliases_of(session, row.model_id, row.version))

        return self._db.run(tx, write=False)

    def get_version_by_id(self, workspace_id: str, version_id: str) -> ModelVersion:
        def tx(session: Session) -> ModelVersion:
            found = session.execute(
                select(ModelVersionRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(  # the zoo's versions are every workspace's to read (docs/zoo.md)
                    ModelVersionRow.id == version_id,
                    ModelVersionRow.workspace_id.in_((workspace_id, ZOO_WORKSPACE_ID)),
                )
            ).one_or_none()
            if found is None:
                raise NotFoundError.of("model version", version_id)
            row, name = found
            return _version_entity(row, name, _aliases_of(session, row.model_id, row.version))

        return self._db.run(tx, write=False)

    def merge_metrics(self, workspace_id: str, version_id: str, metrics: dict[str, float]) -> ModelVersion:
        added = json_normalize(metrics)

        def tx(session: Session) -> ModelVersion:
            found = session.execute(
                select(ModelVersionRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(ModelVersionRow.id == version_id, ModelVersionRow.workspace_id == workspace_id)
                .with_for_update()
            ).one_or_none()
            if found is None:
                raise NotFoundError.of("model version", version_id)
            row, name = found
            row.metrics = {**(row.metrics or {}), **added}  # a new dict: the JSON column sees the change
            session.flush()
            return _version_entity(row, name, _aliases_of(session, row.model_id, row.version))

        return self._db.run(tx)

    def list_models(self, workspace_id: str, *, offset: int = 0, limit: int | None = None) -> list[Model]:
        def tx(session: Session) -> list[Model]:
            rows = list(
                session.scalars(
                    select(ModelRow)
                    .where(ModelRow.workspace_id == workspace_id)
                    .order_by(ModelRow.created_at.desc(), ModelRow.id.desc())
                    .offset(offset)
                    .limit(limit)
                )
            )
            return _models(session, rows)

        return self._db.run(tx, write=False)

    def get_model(self, workspace_id: str, name: str) -> Model:
        def tx(session: Session) -> Model:
            return _models(session, [_find_model(session, workspace_id, name)])[0]

        return self._db.run(tx, write=False)

    def count_models(self, workspace_id: str) -> int:
        def tx(session: Session) -> int:
            return count_rows(session, ModelRow, ModelRow.workspace_id == workspace_id)

        return self._db.run(tx, write=False)

    def list_versions(
        self,
        workspace_id: str,
        name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[ModelVersion]:
        """Oldest first (or newest first). Raises NotFoundError when the model does not exist."""
        order = ModelVersionRow.version.desc() if newest_first else ModelVersionRow.version

        def tx(session: Session) -> list[ModelVersion]:
            model = _find_model(session, workspace_id, name)
            rows = list(
                session.scalars(
                    select(ModelVersionRow)
                    .where(ModelVersionRow.model_id == model.id)
                    .order_by(order)
                    .offset(offset)
                    .limit(limit)
                )
            )
            aliases: dict[int, list[str]] = defaultdict(list)
            found = session.execute(
                select(ModelAliasRow.version, ModelAliasRow.alias).where(
                    ModelAliasRow.model_id == model.id, ModelAliasRow.version.in_([r.version for r in rows])
                )
            )
            for version, alias in found:
                aliases[version].append(alias)
            return [_version_entity(row, name, aliases.get(row.version, [])) for row in rows]

        return self._db.run(tx, write=False)

    def count_versions(self, workspace_id: str, name: str) -> int:
        def tx(session: Session) -> int:
            model = _find_model(session, workspace_id, name)
            return count_rows(session, ModelVersionRow, ModelVersionRow.model_id == model.id)

        return self._db.run(tx, write=False)

    def set_alias(self, workspace_id: str, name: str, alias: str, version: int) -> ModelVersion:
        def tx(session: Session) -> ModelVersion:
            model = _find_model(session, workspace_id, name)
            row = session.scalar(
                select(ModelVersionRow).where(
                    ModelVersionRow.model_id == model.id, ModelVersionRow.version == version
                )
            )
            if row is None:
                raise _version_not_found(name, version)
            insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
            now = ids.utcnow()
            statement = insert(ModelAliasRow).values(
                model_id=model.id, alias=alias, version=version, updated_at=now
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["model_id", "alias"], set_={"version": version, "updated_at": now}
                )
            )
            return _version_entity(row, name, _aliases_of(session, model.id, version))

        return self._db.run(tx)

    def delete_alias(self, workspace_id: str, name: str, alias: str) -> None:
        """Raises NotFoundError when the model or the alias does not exist."""

        def tx(session: Session) -> None:
            model = _find_model(session, workspace_id, name)
            result = session.execute(
                delete(ModelAliasRow)
                .where(ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias)
                .returning(ModelAliasRow.alias)
                .execution_options(synchronize_session=False)
            )
            if result.first() is None:
                raise _alias_not_found(name, alias)

        self._db.run(tx)
