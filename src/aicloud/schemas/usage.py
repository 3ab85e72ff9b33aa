"""Wire models of usage reports (``GET /api/v1/usage``)."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, Field


class UsageBy(enum.StrEnum):
    """How a usage report groups jobs."""

    JOB = "job"  # one row per job; a sweep's trials are summed into the sweep's row
    USER = "user"  # one row per submitting token (a trial counts for its sweep's submitter)
    DAY = "day"  # one row per UTC date on which jobs ended


class UsageRow(BaseModel):
    """The usage of one group of jobs (or of all of them: the report's ``total``)."""

    key: str = Field(description="Job id, token id, or UTC date (YYYY-MM-DD); 'total' for the total.")
    label: str = Field(description="Job name, token name, or the date.")
    jobs: int = Field(description="Jobs counted (processes that ran; a sweep counts its trials).")
    cpu_seconds: float = Field(description="Measured CPU time (user + system).")
    wall_seconds: float = Field(description="Sum of the jobs' wall times.")
    peak_rss_bytes: int = Field(description="Largest peak resident memory of one job.")
    cpu_hours: float = Field(description="Reserved: workers * cpus * wall hours, summed.")
    gpu_hours: float = Field(description="Reserved: workers * gpus * wall hours, summed.")
    gb_hours: float = Field(description="Peak memory in GiB * wall hours, summed.")
    cost: float = Field(description="Sum of the jobs' costs, each priced when the job ended.")
    currency: str = Field(description="The costs' currency ('mixed' if it changed between jobs).")
    kind: str | None = Field(default=None, description="by=job: the job's kind.")
    status: str | None = Field(default=None, description="by=job: the job's status.")
    user: str | None = Field(default=None, description="by=job: the submitting token's name.")
    finished_at: datetime | None = Field(default=None, description="by=job: when the job ended.")


class ServingRow(BaseModel):
    """The replicas of one deployment (or of all: ``serving.total``) in the report's period."""

    deployment_id: str = Field(description="The deployment's id; 'total' for the total.")
    deployment: str = Field(description="The deployment's name (as when its replicas started).")
    replicas: int = Field(description="Replicas that ran in the period.")
    replica_hours: float = Field(
        description="Sum of the replicas' wall hours in the period (to now if running)."
    )
    cpu_hours: float = Field(description="Reserved: cpus * replica hours.")
    gpu_hours: float = Field(description="Reserved: gpus * replica hours.")
    gb_hours: float = Field(description="Memory limit in GiB * replica hours (0 without a limit).")
    requests: int = Field(description="Calls the gateway counted since the server started.")
    cost: float = Field(description="Priced at the prices in force now.")
    cost_per_1k: float | None = Field(description="cost * 1000 / requests; None without requests.")


class ServingUsage(BaseModel):
    """Serving: replica-hours of the workspace's deployments, priced like jobs."""

    rows: list[ServingRow] = Field(default_factory=list)
    total: ServingRow


class StorageUsage(BaseModel):
    """Storage: the blobs the workspace holds now, each priced from when it first held it."""

    blobs: int = Field(description="Distinct blobs held.")
    bytes: int = Field(description="Their total size.")
    gb_months: float = Field(description="Size in GiB * months (30 days) held in the period, summed.")
    price_gb_month: float = Field(description="AICLOUD_PRICE_GB_MONTH.")
    cost: float


class UsageReport(BaseModel):
    """Usage of the caller's workspace: jobs that ended in ``[since, until)``, the replicas and
    blobs held in it, and the cost of all three."""

    by: UsageBy
    since: datetime | None = None
    until: datetime | None = None
    currency: str = Field(description="The currency of the prices in force now.")
    rows: list[UsageRow]
    total: UsageRow
    serving: ServingUsage | None = Field(default=None, description="Replica-hours by deployment.")
    storage: StorageUsage | None = Field(default=None, description="GiB-months of blobs held.")
    total_cost: float | None = Field(default=None, description="Jobs + serving + storage.")
