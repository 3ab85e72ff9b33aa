"""Canary traffic: a deployment may serve several versions of its model at once, with weights.

``deployments.traffic`` maps a model version's id to its relative weight (NULL: the one version in
``model_version_id`` takes everything); ``replicas.model_version_id`` is the version each replica
serves. Replicas started before this revision serve their deployment's version, which the upgrade
copies in.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("traffic", sa.JSON(), nullable=True))
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("model_version_id", sa.String(64), nullable=True))
    op.execute(
        "UPDATE replicas SET model_version_id = "
        "(SELECT model_version_id FROM deployments WHERE deployments.id = replicas.deployment_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("model_version_id")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("traffic")
