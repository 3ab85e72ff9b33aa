"""Edge placement (docs/edge.md): replicas placed on edge nodes, and what a node reports.

``replicas.node_id`` names the edge node a replica is placed on (NULL: a replica of this machine);
deleting the node deletes its replicas' rows. ``edge_nodes.address`` is where the gateway reaches a
node's replicas (its last status report), ``requests`` and ``errors`` what they served since it
joined, as it reported them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("edge_nodes") as batch:
        batch.add_column(sa.Column("address", sa.String(300), nullable=True))
        batch.add_column(sa.Column("requests", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("errors", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=True))
        batch.create_foreign_key(
            "fk_replicas_node_id_edge_nodes", "edge_nodes", ["node_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_replicas_node_id", ["node_id"])


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_index("ix_replicas_node_id")
        batch.drop_constraint("fk_replicas_node_id_edge_nodes", type_="foreignkey")
        batch.drop_column("node_id")
    with op.batch_alter_table("edge_nodes") as batch:
        batch.drop_column("errors")
        batch.drop_column("requests")
        batch.drop_column("address")
