"""Wire models of alert rules and their events (``/api/v1/alerts``, docs/alerts.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AlertCreate(BaseModel):
    """A rule: ``signal op threshold`` held for ``for`` fires; checked by the server (422 names the field)."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(description="Unique in the workspace.")
    signal: str = Field(description="A built-in signal, e.g. deployment.p99_latency_ms (docs/alerts.md).")
    deployment: str | None = Field(default=None, description="The deployment, for deployment.* signals.")
    job: str | None = Field(default=None, description="jobs.failed: count only jobs of this name.")
    window: str | None = Field(default=None, description="The signal's window, e.g. 5m (windowed signals).")
    op: str = Field(description="One of > >= < <= == !=.")
    threshold: float = Field(allow_inf_nan=False)
    for_: str = Field(default="0s", alias="for", description="How long the condition must hold, e.g. 2m.")
    severity: str = Field(default="warning", max_length=32)
    notify: list[str] = Field(default_factory=list, description="Targets: webhook:http(s)://...")


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    signal: str
    params: dict[str, Any]
    op: str
    threshold: float
    for_s: float
    severity: str
    notify: list[str] = Field(description="Webhook URLs shown without their path and query.")
    state: str = Field(description="inactive, pending or firing.")
    state_since: datetime | None
    fired_at: datetime | None
    last_value: float | None
    evaluated_at: datetime | None
    created_at: datetime


class AlertEventOut(BaseModel):
    """One notification of a rule's state change to one target, and its delivery."""

    id: str
    rule: str
    status: str = Field(description="firing or resolved.")
    target: str = Field(description="Shown without path and query.")
    delivery: str = Field(description="pending, sent or failed.")
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
