"""Wire models of monitoring (``POST /api/v1/monitoring/drift``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DriftRequest(BaseModel):
    """Two versions of datasets of the caller's workspace to compare, column by column."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(description="The reference dataset: `name:version` or `name` (its latest).")
    current: str = Field(description="The dataset compared with it: `name:version` or `name`.")
    columns: list[str] | None = Field(
        default=None, description="The columns to test (default: every column of either side)."
    )
    threshold: float = Field(
        default=0.5, gt=0, le=1, description="The share of drifted columns at which the report says drifted."
    )


class DriftColumn(BaseModel):
    """One column's test: a p-value (``ks``, ``chi2``: drifted below the threshold) or a distance
    (``wasserstein``, ``jensen_shannon``: drifted above it)."""

    column: str
    kind: str = Field(description="numeric or categorical")
    test: str = Field(description="ks, wasserstein, chi2 or jensen_shannon")
    statistic: float
    threshold: float
    drifted: bool
    reference_values: int = Field(description="Values of the reference's sample that were tested.")
    current_values: int = Field(description="Values of the current sample that were tested.")


class DatasetSide(BaseModel):
    """The exact dataset version one side of a report read."""

    name: str
    version: int
    id: str


class DriftReport(BaseModel):
    """Per-column drift of ``current`` against ``reference``; ``drift_score`` (the share of tested
    columns that drifted, 0 to 1) is the number an alert rule reads."""

    reference: DatasetSide
    current: DatasetSide
    columns: list[DriftColumn]
    only_in_reference: list[str]
    only_in_current: list[str]
    skipped: list[dict[str, Any]] = Field(description="Columns not tested, with the reason.")
    reference_rows: int
    current_rows: int
    tested_columns: int
    drifted_columns: int
    drift_score: float
    threshold: float
    drifted: bool
