"""Named objects that number their versions (datasets, models): one counter per name.

Taking the next version is one statement pair inside the caller's transaction: insert the
named row if it is missing (``ON CONFLICT DO NOTHING``, so a concurrent first version is not
an error), then ``UPDATE ... SET last_version = last_version + 1 ... RETURNING``. The row
lock orders concurrent writers on PostgreSQL; SQLite writers are already serial under
``BEGIN IMMEDIATE``. N concurrent callers for one name get 1..N.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicloud.store.sql import ids


def next_version(
    session: Session, row_cls: Any, id_prefix: str, workspace_id: str, name: str, now: Any
) -> tuple[str, int]:
    """Create the named row if missing and take its next version number: (row id, version).

    ``row_cls`` is a table with ``id``, ``workspace_id``, ``name``, ``last_version``,
    ``created_at`` and ``updated_at``, unique on (workspace_id, name).
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    bump = (
        update(row_cls)
        .where(row_cls.workspace_id == workspace_id, row_cls.name == name)
        .values(last_version=row_cls.last_version + 1, updated_at=now)
        .returning(row_cls.id, row_cls.last_version)
        .execution_options(synchronize_session=False)
    )
    # A concurrent delete can remove the row between the insert and the update
    # (PostgreSQL only; SQLite transactions are serial): then insert it again.
    for _ in range(10):
        session.execute(
            insert(row_cls)
            .values(
                id=ids.new_id(id_prefix),
                workspace_id=workspace_id,
                name=name,
                last_version=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "name"])
        )
        got = session.execute(bump).one_or_none()
        if got is not None:
            return str(got.id), int(got.last_version)
    raise RuntimeError(f"{name!r} kept disappearing while adding a version")
