"""Training: jobs, runs and their metric points, the model registry, blob ownership.

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _workspace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"], ["workspaces.id"], name=f"fk_{table}_workspace_id_workspaces", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("handle", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("model_version_id", sa.String(64), nullable=True),
        sa.Column("log_digest", sa.String(128), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        _workspace_fk("jobs"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_workspace_id_created_at", "jobs", ["workspace_id", "created_at"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        _timestamp("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        _workspace_fk("runs"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_runs_job_id_jobs", ondelete="CASCADE"),
    )
    op.create_index("ix_runs_workspace_id_created_at", "runs", ["workspace_id", "created_at"])
    op.create_index("ix_runs_job_id", "runs", ["job_id"])
    op.create_table(
        "metrics",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_metrics_run_id_runs", ondelete="CASCADE"),
    )
    op.create_index(
        "ix_metrics_run_id_name_step_timestamp_id_value",
        "metrics",
        ["run_id", "name", "step", "timestamp", "id", "value"],
    )
    op.create_table(
        "models",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        _workspace_fk("models"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_models_workspace_id_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_model_versions_model_id_models", ondelete="CASCADE"
        ),
        _workspace_fk("model_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
    )
    op.create_index("ix_model_versions_workspace_id", "model_versions", ["workspace_id"])
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_model_aliases"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_model_aliases_model_id_models", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "blob_refs",
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("workspace_id", "digest", name="pk_blob_refs"),
        _workspace_fk("blob_refs"),
    )
    op.create_index("ix_blob_refs_digest", "blob_refs", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_blob_refs_digest", table_name="blob_refs")
    op.drop_table("blob_refs")
    op.drop_table("model_aliases")
    op.drop_index("ix_model_versions_workspace_id", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("models")
    op.drop_index("ix_metrics_run_id_name_step_timestamp_id_value", table_name="metrics")
    op.drop_table("metrics")
    op.drop_index("ix_runs_job_id", table_name="runs")
    op.drop_index("ix_runs_workspace_id_created_at", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_jobs_workspace_id_created_at", table_name="jobs")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
