"""Blob ownership and unique token names (tenant isolation).

``blob_refs`` becomes the one table of references to blobs: (digest, workspace, owner kind,
owner id). It is back-filled from every place that stored a digest: the old ``blob_refs``
rows (uploads, job logs and checkpoints, kept as ``upload`` references), dataset versions,
model version files, jobs (spec ``code``, ``log_digest``, ``checkpoint.digest``) and
service deployments (spec ``service.code``).

Token names become unique per workspace; older duplicates keep the oldest token's name and
the others are renamed ``<name>-<token id>``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_refs = sa.table(
    "blob_refs",
    sa.column("digest", sa.String()),
    sa.column("workspace_id", sa.String()),
    sa.column("owner_kind", sa.String()),
    sa.column("owner_id", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_old_refs = sa.table("blob_refs", sa.column("workspace_id", sa.String()), sa.column("digest", sa.String()))
_dataset_versions = sa.table(
    "dataset_versions",
    sa.column("id", sa.String()),
    sa.column("workspace_id", sa.String()),
    sa.column("blob_digest", sa.String()),
)
_model_versions = sa.table(
    "model_versions",
    sa.column("id", sa.String()),
    sa.column("workspace_id", sa.String()),
    sa.column("files", sa.JSON()),
)
_jobs = sa.table(
    "jobs",
    sa.column("id", sa.String()),
    sa.column("workspace_id", sa.String()),
    sa.column("spec", sa.JSON()),
    sa.column("log_digest", sa.String()),
    sa.column("checkpoint", sa.JSON()),
)
_deployments = sa.table(
    "deployments",
    sa.column("id", sa.String()),
    sa.column("workspace_id", sa.String()),
    sa.column("spec", sa.JSON()),
)
_tokens = sa.table(
    "tokens",
    sa.column("id", sa.String()),
    sa.column("workspace_id", sa.String()),
    sa.column("name", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _digest(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _references(conn: sa.Connection, old: list[tuple[str, str]]) -> Iterator[tuple[str, str, str, str]]:
    """(digest, workspace id, owner kind, owner id) for every digest stored before 0005."""
    for workspace_id, uploaded in old:
        yield uploaded, workspace_id, "upload", ""
    for row in conn.execute(sa.select(_dataset_versions)):
        yield row.blob_digest, row.workspace_id, "dataset_version", row.id
    for row in conn.execute(sa.select(_model_versions)):
        for value in (row.files or {}).values():
            if digest := _digest(value):
                yield digest, row.workspace_id, "model_version", row.id
    for row in conn.execute(sa.select(_jobs)):
        owned = (
            ("job_code", _get(row.spec, "code")),
            ("job_log", row.log_digest),
            ("job_checkpoint", _get(row.checkpoint, "digest")),
        )
        for kind, value in owned:
            if digest := _digest(value):
                yield digest, row.workspace_id, kind, row.id
    for row in conn.execute(sa.select(_deployments)):
        if digest := _digest(_get(row.spec, "service", "code")):
            yield digest, row.workspace_id, "deployment", row.id


def _rename_duplicate_tokens(conn: sa.Connection) -> None:
    seen: set[tuple[str, str]] = set()
    query = sa.select(_tokens).order_by(
        _tokens.c.workspace_id, _tokens.c.name, _tokens.c.created_at, _tokens.c.id
    )
    for row in conn.execute(query).all():
        key = (row.workspace_id, row.name)
        if key in seen:
            renamed = f"{row.name[: 254 - len(row.id)]}-{row.id}"
            conn.execute(sa.update(_tokens).where(_tokens.c.id == row.id).values(name=renamed))
        seen.add(key)


def upgrade() -> None:
    conn = op.get_bind()
    old = [(r.workspace_id, r.digest) for r in conn.execute(sa.select(_old_refs))]
    op.drop_index("ix_blob_refs_digest", table_name="blob_refs")
    op.drop_table("blob_refs")
    op.create_table(
        "blob_refs",
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("owner_kind", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", "workspace_id", "owner_kind", "owner_id", name="pk_blob_refs"),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_blob_refs_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_blob_refs_owner_kind_owner_id", "blob_refs", ["owner_kind", "owner_id"])
    now = datetime.now(UTC)
    if conn.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # as UTCDateTime stores it there
    rows = [
        {"digest": d, "workspace_id": w, "owner_kind": k, "owner_id": i, "created_at": now}
        for d, w, k, i in sorted(set(_references(conn, old)))
    ]
    for start in range(0, len(rows), 1000):
        conn.execute(sa.insert(_refs), rows[start : start + 1000])

    _rename_duplicate_tokens(conn)
    with op.batch_alter_table("tokens") as batch:
        batch.create_unique_constraint("uq_tokens_workspace_id_name", ["workspace_id", "name"])


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_constraint("uq_tokens_workspace_id_name", type_="unique")
    conn = op.get_bind()
    kept = conn.execute(sa.select(_refs.c.workspace_id, _refs.c.digest).distinct()).all()
    op.drop_index("ix_blob_refs_owner_kind_owner_id", table_name="blob_refs")
    op.drop_table("blob_refs")
    op.create_table(
        "blob_refs",
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "digest", name="pk_blob_refs"),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_blob_refs_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_blob_refs_digest", "blob_refs", ["digest"])
    now = datetime.now(UTC)
    if conn.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    old = sa.table(
        "blob_refs",
        sa.column("workspace_id", sa.String()),
        sa.column("digest", sa.String()),
        sa.column("size_bytes", sa.BigInteger()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = [{"workspace_id": w, "digest": d, "size_bytes": 0, "created_at": now} for w, d in kept]
    if rows:
        conn.execute(sa.insert(old), rows)
