"""Edge nodes (docs/edge.md): machines that joined a workspace to pull its signed bundles.

``edge_nodes`` holds a node's name (unique in its workspace), its labels and the id of the token
it was given at join (scope ``edge-node:<id>``); deleting the token deletes the node.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "edge_nodes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_edge_nodes"),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_edge_nodes_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name="fk_edge_nodes_token_id_tokens", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("workspace_id", "name", name="uq_edge_nodes_workspace_id_name"),
    )
    op.create_index("ix_edge_nodes_token_id", "edge_nodes", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_edge_nodes_token_id", table_name="edge_nodes")
    op.drop_table("edge_nodes")
