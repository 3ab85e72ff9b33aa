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


class UsageReport(BaseModel):
    """Usage of the caller's workspace for jobs that ended in ``[since, until)``."""

    by: UsageBy
    since: datetime | None = None
    until: datetime | None = None
    currency: str = Field(description="The currency of the prices in force now.")
    rows: list[UsageRow]
    total: UsageRow
