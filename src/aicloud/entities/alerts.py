"""Alert rules (docs/alerts.md): a signal compared with a threshold, its state, its notifications."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AlertRule:
    """A rule and where its state machine stands (``inactive``, ``pending`` or ``firing``).

    ``params`` holds the signal's arguments (``deployment``, ``job``, ``window_s``); ``state_since``
    is when the rule entered ``state``; ``fired_at`` when the current firing began (None: not firing).
    """

    id: str
    workspace_id: str
    name: str
    signal: str
    op: str
    threshold: float
    for_s: float
    severity: str
    created_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    notify: list[str] = field(default_factory=list)
    state: str = "inactive"
    state_since: datetime | None = None
    fired_at: datetime | None = None
    last_value: float | None = None
    evaluated_at: datetime | None = None


@dataclass(frozen=True)
class AlertNotification:
    """One payload for one target, recorded before it is sent (``delivery``: pending, sent, failed)."""

    id: str
    rule_id: str
    workspace_id: str
    rule_name: str
    status: str  # firing | resolved
    target: str
    payload: dict[str, Any]
    delivery: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None = None
    last_error: str | None = None
