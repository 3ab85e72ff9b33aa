"""Store interface for alert rules and their notifications (same rules as ``store.base``)."""

from __future__ import annotations

import abc
import builtins
from datetime import datetime
from typing import Any

from aicloud.entities.alerts import AlertNotification, AlertRule


class AlertStore(abc.ABC):
    @abc.abstractmethod
    def create_rule(
        self,
        *,
        workspace_id: str,
        name: str,
        signal: str,
        params: dict[str, Any],
        op: str,
        threshold: float,
        for_s: float,
        severity: str,
        notify: builtins.list[str],
    ) -> AlertRule:
        """Raises ConflictError when the name exists in the workspace."""

    @abc.abstractmethod
    def get_rule(self, workspace_id: str, name: str) -> AlertRule:
        """Raises NotFoundError (another workspace's rule too)."""

    @abc.abstractmethod
    def delete_rule(self, workspace_id: str, name: str) -> None:
        """Removes the rule and its notifications. Raises NotFoundError."""

    @abc.abstractmethod
    def list_rules(self, workspace_id: str | None = None) -> builtins.list[AlertRule]:
        """By workspace, then name; ``None``: every workspace's (the evaluator)."""

    @abc.abstractmethod
    def transition(
        self,
        rule_id: str,
        *,
        state: str,
        state_since: datetime | None,
        fired_at: datetime | None,
        value: float | None,
        evaluated_at: datetime,
        notifications: builtins.list[tuple[str, str, dict[str, Any]]],
    ) -> AlertRule | None:
        """Store the rule's new state and, in the same transaction, its ``(status, target, payload)``
        notifications as pending. Returns None when the rule was deleted meanwhile."""

    @abc.abstractmethod
    def due_notifications(self, now: datetime, limit: int = 100) -> builtins.list[AlertNotification]:
        """Pending notifications whose ``next_attempt_at`` has come, oldest first."""

    @abc.abstractmethod
    def mark_notification(
        self,
        notification_id: str,
        *,
        delivery: str,
        attempts: int,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        """Record one attempt's outcome: ``sent``, ``failed``, or still ``pending`` with a retry time."""

    @abc.abstractmethod
    def notifications(
        self, workspace_id: str, *, rule_name: str | None = None, limit: int = 100
    ) -> builtins.list[AlertNotification]:
        """The workspace's notifications (alert events), newest first."""
