"""Metric series in packed chunks: ``run_metrics`` (one row per metric of a run: last point, min,
max, count) and ``metric_chunks`` (up to 1,024 points per row, ``store.sql.metric_chunks`` has
the format) replace ``metrics`` (one row per point, about 150 bytes each with its index: a
billion points did not fit on a disk, nor load in a day).

The upgrade reads the points series by series in series order and writes them as chunks; the
downgrade writes them back as rows. ``run_metrics`` is a WITHOUT ROWID table on SQLite (clustered
by its key), and the runs' (workspace, created_at) index takes ``id`` too, so sorting a
workspace's runs by a metric reads indexes only.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op

from aicloud.entities.series import MetricArrays
from aicloud.store.sql import metric_chunks

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500
"""Series written per INSERT while converting."""


def _metrics_table() -> sa.Table:
    return sa.Table(
        "metrics",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("run_id", sa.String(64)),
        sa.Column("name", sa.String(255)),
        sa.Column("step", sa.BigInteger()),
        sa.Column("value", sa.Double()),
        sa.Column("timestamp", sa.Double()),
    )


def _run_metrics_table() -> sa.Table:
    return sa.Table(
        "run_metrics",
        sa.MetaData(),
        sa.Column("run_id", sa.String(64)),
        sa.Column("name", sa.String(255)),
        sa.Column("count", sa.BigInteger()),
        sa.Column("chunks", sa.Integer()),
        sa.Column("last_step", sa.BigInteger()),
        sa.Column("last_timestamp", sa.Double()),
        sa.Column("last_value", sa.Double()),
        sa.Column("min_value", sa.Double()),
        sa.Column("max_value", sa.Double()),
    )


def _chunks_table() -> sa.Table:
    return sa.Table(
        "metric_chunks",
        sa.MetaData(),
        sa.Column("run_id", sa.String(64)),
        sa.Column("name", sa.String(255)),
        sa.Column("seq", sa.Integer()),
        sa.Column("count", sa.Integer()),
        sa.Column("data", sa.LargeBinary()),
    )


def _series(connection: sa.Connection) -> Iterator[tuple[str, str, MetricArrays]]:
    """Every series of ``metrics``, in series order (the old covering index's order)."""
    m = _metrics_table().c
    query = sa.select(m.run_id, m.name, m.step, m.value, m.timestamp).order_by(
        m.run_id, m.name, m.step, m.timestamp, m.id
    )
    key: tuple[str, str] | None = None
    points: list[tuple[Any, ...]] = []
    for row in connection.execute(query, execution_options={"yield_per": 10_000}):
        if (row[0], row[1]) != key:
            if key is not None:
                yield (*key, _arrays(points))
            key, points = (row[0], row[1]), []
        points.append(row[2:])
    if key is not None:
        yield (*key, _arrays(points))


def _arrays(points: list[tuple[Any, ...]]) -> MetricArrays:
    steps, values, timestamps = zip(*points, strict=True)
    return MetricArrays.of(steps, [math.nan if v is None else v for v in values], timestamps)


def _convert(connection: sa.Connection) -> None:
    metrics, chunks = [], []
    for run_id, name, series in _series(connection):
        finite = series.values[~np.isnan(series.values)]
        last = float(series.values[-1])
        pieces = list(metric_chunks.split(series))
        metrics.append(
            {
                "run_id": run_id,
                "name": name,
                "count": len(series),
                "chunks": len(pieces),
                "last_step": int(series.steps[-1]),
                "last_timestamp": float(series.timestamps[-1]),
                "last_value": None if math.isnan(last) else last,
                "min_value": float(finite.min()) if len(finite) else None,
                "max_value": float(finite.max()) if len(finite) else None,
            }
        )
        chunks += [
            {"run_id": run_id, "name": name, "seq": i, "count": len(p), "data": metric_chunks.pack(p)}
            for i, p in enumerate(pieces)
        ]
        if len(metrics) >= _BATCH:
            _flush(connection, metrics, chunks)
    _flush(connection, metrics, chunks)


def _flush(connection: sa.Connection, metrics: list[dict[str, Any]], chunks: list[dict[str, Any]]) -> None:
    if metrics:
        connection.execute(sa.insert(_run_metrics_table()), metrics)
        connection.execute(sa.insert(_chunks_table()), chunks)
    metrics.clear()
    chunks.clear()


def upgrade() -> None:
    op.create_table(
        "run_metrics",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("last_timestamp", sa.Double(), nullable=False),
        sa.Column("last_value", sa.Double(), nullable=True),
        sa.Column("min_value", sa.Double(), nullable=True),
        sa.Column("max_value", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "name", name="pk_run_metrics"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_metrics_run_id_runs", ondelete="CASCADE"
        ),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_run_metrics_name_last_value", "run_metrics", ["name", "last_value"])
    # Ordering a workspace's runs reads the index only (their rows are long: ``summary``).
    op.drop_index("ix_runs_workspace_id_created_at", table_name="runs")
    op.create_index("ix_runs_workspace_id_created_at_id", "runs", ["workspace_id", "created_at", "id"])
    op.create_table(
        "metric_chunks",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "name", "seq", name="pk_metric_chunks"),
        sa.ForeignKeyConstraint(
            ["run_id", "name"],
            ["run_metrics.run_id", "run_metrics.name"],
            name="fk_metric_chunks_run_id_run_metrics",
            ondelete="CASCADE",
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        # A chunk is zlib-compressed already: keep PostgreSQL from trying to compress it again.
        op.execute("ALTER TABLE metric_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
    _convert(op.get_bind())
    op.drop_index("ix_metrics_run_id_name_step_timestamp_id_value", table_name="metrics")
    op.drop_table("metrics")


def downgrade() -> None:
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
    connection = op.get_bind()
    c = _chunks_table().c
    query = sa.select(c.run_id, c.name, c.data).order_by(c.run_id, c.name, c.seq)
    rows: list[dict[str, Any]] = []
    for run_id, name, data in connection.execute(query, execution_options={"yield_per": 1_000}):
        series = metric_chunks.unpack(data)
        rows += [
            {"run_id": run_id, "name": name, "step": s, "value": None if v != v else v, "timestamp": t}
            for s, v, t in zip(
                series.steps.tolist(), series.values.tolist(), series.timestamps.tolist(), strict=True
            )
        ]
        if len(rows) >= 50_000:
            connection.execute(sa.insert(_metrics_table()), rows)
            rows.clear()
    if rows:
        connection.execute(sa.insert(_metrics_table()), rows)
    op.drop_table("metric_chunks")
    op.drop_index("ix_run_metrics_name_last_value", table_name="run_metrics")
    op.drop_table("run_metrics")
    op.drop_index("ix_runs_workspace_id_created_at_id", table_name="runs")
    op.create_index("ix_runs_workspace_id_created_at", "runs", ["workspace_id", "created_at"])
