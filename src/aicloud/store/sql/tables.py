"""The SQL schema as SQLAlchemy 2 declarative tables.

These rows never leave ``store.sql``: every store module turns them into entities.
Migrations in ``migrations/versions`` create the same schema; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite drops the zone, so values are converted to
    UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorkspaceRow(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TokenRow(Base):
    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str | None] = mapped_column(Text(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DatasetRow(Base):
    """A named dataset; ``last_version`` is the counter that numbers its versions."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    last_version: Mapped[int] = mapped_column(Integer())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DatasetVersionRow(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), ForeignKey("datasets.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer())
    format: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(Text())
    blob_digest: Mapped[str] = mapped_column(String(128), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger())
    num_rows: Mapped[int] = mapped_column(BigInteger())
    schema: Mapped[list[dict[str, Any]]] = mapped_column(JSON())
    stats: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON())
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON())
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SecretRow(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- training: jobs, runs and their metrics, the model registry, blob ownership ---


class JobRow(Base):
    """A job: ``spec`` is what was asked; ``status`` moves only by compare-and-set."""

    __tablename__ = "jobs"
    __table_args__ = (Index(None, "workspace_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON())
    status: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean())
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text(), nullable=True)
    handle: Mapped[dict[str, Any]] = mapped_column(JSON())
    # No foreign keys: runs point at their job, and versions outlive what made them.
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_version_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    log_digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON())
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    attempt: Mapped[int] = mapped_column(Integer(), default=0)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)


class RunRow(Base):
    """A run; its metrics are ``run_metrics`` (one row each) and ``metric_chunks`` (the points).

    ``summary`` maps a metric name to ``[step, timestamp, value]`` of its last point: the same
    last points as ``run_metrics``, written in the same transaction, kept for the MLflow search
    (``store.sql.tracking_search``) until it reads ``run_metrics``. The first index holds ``id``
    too, so ordering a workspace's runs reads no row (a row with 100 metrics in ``summary`` is
    several pages long).
    """

    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "workspace_id", "created_at", "id"),
        Index(None, "workspace_id", "experiment", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON())
    summary: Mapped[dict[str, list[Any]]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # experiment tracking (migration 0008): the experiment's name (None: in none yet, MLflow's
    # Default), MLflow's run tags, and MLflow's soft delete
    experiment: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tags: Mapped[dict[str, str] | None] = mapped_column(JSON(), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ExperimentRow(Base):
    """A named group of runs (the MLflow tracking API's experiment); runs name it in ``experiment``."""

    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    tags: Mapped[dict[str, str]] = mapped_column(JSON())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RunArtifactRow(Base):
    """A file logged to a run: its path under the run's artifact root and its blob. The blob is
    referenced from ``blob_refs`` as (``run_artifact``, run id)."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    digest: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RunMetricRow(Base):
    """One metric of a run: its last point (by step, then timestamp, then as logged), the min and
    max of its finite values, how many points and chunks it has. ``last_value`` is NULL when the
    last value was not finite. Sorting and filtering runs by a metric reads these rows only
    (the index serves "every run's ``val_loss`` in order")."""

    __tablename__ = "run_metrics"
    # Clustered by (run_id, name) on SQLite: looking a metric up reads its row with the key.
    __table_args__ = (Index(None, "name", "last_value"), {"sqlite_with_rowid": False})

    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger())
    chunks: Mapped[int] = mapped_column(Integer())
    last_step: Mapped[int] = mapped_column(BigInteger())
    last_timestamp: Mapped[float] = mapped_column(Double())
    last_value: Mapped[float | None] = mapped_column(Double(), nullable=True)
    min_value: Mapped[float | None] = mapped_column(Double(), nullable=True)
    max_value: Mapped[float | None] = mapped_column(Double(), nullable=True)


class MetricChunkRow(Base):
    """Up to ``metric_chunks.CHUNK_POINTS`` points of one series, packed (``store.sql.metric_chunks``
    has the format); ``seq`` numbers a series' chunks from 0 in the order logged."""

    __tablename__ = "metric_chunks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "name"], ["run_metrics.run_id", "run_metrics.name"], ondelete="CASCADE"
        ),
    )

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer(), primary_key=True)
    count: Mapped[int] = mapped_column(Integer())
    data: Mapped[bytes] = mapped_column(LargeBinary())


class ModelRow(Base):
    """A registered model; ``last_version`` numbers its versions (as datasets do)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    last_version: Mapped[int] = mapped_column(Integer())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), ForeignKey("models.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer())
    files: Mapped[dict[str, str]] = mapped_column(JSON())
    signature: Mapped[dict[str, Any]] = mapped_column(JSON())
    config: Mapped[dict[str, Any]] = mapped_column(JSON())
    metrics: Mapped[dict[str, float]] = mapped_column(JSON())
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModelAliasRow(Base):
    """``alias`` of a model points at one of its versions; one row per alias, moved in place."""

    __tablename__ = "model_aliases"

    model_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(Integer())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BlobRefRow(Base):
    """A reference to the blob ``digest``: what holds it (``owner_kind``, ``owner_id``) in which
    workspace. A blob is removed only when no row is left for its digest; a workspace reads a
    blob by digest only while it has a row for it (``store.sql.blobrefs``)."""

    __tablename__ = "blob_refs"
    __table_args__ = (Index(None, "owner_kind", "owner_id"),)

    digest: Mapped[str] = mapped_column(String(128), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    owner_kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- serving: deployments (desired state) and their replicas (actual state) ---


class DeploymentRow(Base):
    """A deployment; ``generation`` grows (in the same UPDATE) on every spec change."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON())
    status: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer())
    desired_replicas: Mapped[int] = mapped_column(Integer())
    model_version_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # canary: model version id → relative weight; NULL: model_version_id takes all traffic
    traffic: Mapped[dict[str, int] | None] = mapped_column(JSON(), nullable=True)
    message: Mapped[str | None] = mapped_column(Text(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReplicaRow(Base):
    """A serving replica: its process is known to the executor by ``handle``."""

    __tablename__ = "replicas"
    __table_args__ = (Index(None, "deployment_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(64), ForeignKey("deployments.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer())
    state: Mapped[str] = mapped_column(String(16))
    port: Mapped[int] = mapped_column(Integer())
    handle: Mapped[dict[str, Any]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    message: Mapped[str | None] = mapped_column(Text(), nullable=True)
    # the replica's key, sealed with the master key (aad: the replica id); None before migration 0006
    key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary(), nullable=True)
    # the model version this replica serves (None: a Service deployment)
    model_version_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the edge node it is placed on (None: a replica of this machine); migration 0011
    node_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("edge_nodes.id", ondelete="CASCADE"), nullable=True, index=True
    )


class ReplicaUsageRow(Base):
    """What one replica reserved and from when to when (``None``: running), for serving costs
    (``server.services.usage_costs``). It outlives its replica and its deployment; migration 0012."""

    __tablename__ = "replica_usage"
    __table_args__ = (Index(None, "workspace_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the replica's id
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(String(64))
    deployment_name: Mapped[str] = mapped_column(String(255))
    cpus: Mapped[int] = mapped_column(Integer())
    gpus: Mapped[int] = mapped_column(Integer())
    memory_mb: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# --- edge nodes (docs/edge.md)


class EdgeNodeRow(Base):
    """A machine that joined the workspace to pull its bundles; deleting its token deletes it."""

    __tablename__ = "edge_nodes"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    labels: Mapped[dict[str, str]] = mapped_column(JSON())
    token_id: Mapped[str] = mapped_column(String(64), ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # its last status report (migration 0011): where its replicas are reached, what they served
    address: Mapped[str | None] = mapped_column(String(300), nullable=True)
    requests: Mapped[int] = mapped_column(BigInteger(), default=0, server_default="0")
    errors: Mapped[int] = mapped_column(BigInteger(), default=0, server_default="0")


# --- alerts (docs/alerts.md; migration 0013)


class AlertRuleRow(Base):
    """A rule and its state machine's position, so a restarted control plane goes on where it was."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    signal: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSON())
    op: Mapped[str] = mapped_column(String(4))
    threshold: Mapped[float] = mapped_column(Double())
    for_s: Mapped[float] = mapped_column(Double())
    severity: Mapped[str] = mapped_column(String(32))
    notify: Mapped[list[str]] = mapped_column(JSON())
    state: Mapped[str] = mapped_column(String(16))
    state_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_value: Mapped[float | None] = mapped_column(Double(), nullable=True)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertNotificationRow(Base):
    """One payload for one target: written before it is sent, marked sent or failed after."""

    __tablename__ = "alert_notifications"
    __table_args__ = (Index(None, "delivery", "next_attempt_at"), Index(None, "workspace_id", "created_at"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64), ForeignKey("alert_rules.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(String(64))
    rule_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(Text())
    payload: Mapped[dict[str, Any]] = mapped_column(JSON())
    delivery: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text(), nullable=True)
