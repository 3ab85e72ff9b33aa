"""Serving costs (docs/usage.md): ``replica_usage``, one row per replica that ever started.

A replica's row is deleted when it retires; its usage row stays, with ``ended_at`` set, so that
``GET /usage`` can price replica-hours after the replica and its deployment are gone.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replica_usage",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "workspace_id", sa.String(64), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("deployment_id", sa.String(64), nullable=False),
        sa.Column("deployment_name", sa.String(255), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_replica_usage_workspace_id_started_at", "replica_usage", ["workspace_id", "started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_replica_usage_workspace_id_started_at", table_name="replica_usage")
    op.drop_table("replica_usage")
