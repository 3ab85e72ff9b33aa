"""Alert rules (docs/alerts.md): ``alert_rules`` with their state, ``alert_notifications`` with delivery.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "workspace_id", sa.String(64), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("signal", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("op", sa.String(4), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("for_s", sa.Double(), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("notify", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_value", sa.Double(), nullable=True),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_alert_rules_workspace_id_name"),
    )
    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "rule_id", sa.String(64), sa.ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("rule_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("delivery", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_alert_notifications_delivery_next_attempt_at",
        "alert_notifications",
        ["delivery", "next_attempt_at"],
    )
    op.create_index(
        "ix_alert_notifications_workspace_id_created_at",
        "alert_notifications",
        ["workspace_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_alert_notifications_workspace_id_created_at", table_name="alert_notifications")
    op.drop_index("ix_alert_notifications_delivery_next_attempt_at", table_name="alert_notifications")
    op.drop_table("alert_notifications")
    op.drop_table("alert_rules")
