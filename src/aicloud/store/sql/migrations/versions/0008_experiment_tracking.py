"""Experiment tracking (the MLflow tracking API, docs/mlflow.md): experiments, run artifacts, and a
run's experiment name, tags and soft delete.

``experiments`` holds the named experiments of a workspace (MLflow's Default experiment is not a
row: runs whose ``experiment`` is NULL or ``Default`` are in it). ``run_artifacts`` maps a path
under a run's artifact root to the blob that holds the file; the blob is referenced from
``blob_refs`` as (``run_artifact``, run id). Existing runs are in no experiment.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("experiment", sa.String(255), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_runs_workspace_id_experiment_created_at", "runs", ["workspace_id", "experiment", "created_at"]
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_experiments_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("workspace_id", "name", name="uq_experiments_workspace_id_name"),
    )
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "path", name="pk_run_artifacts"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_artifacts_run_id_runs", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("run_artifacts")
    op.drop_table("experiments")
    op.drop_index("ix_runs_workspace_id_experiment_created_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("tags")
        batch.drop_column("experiment")
