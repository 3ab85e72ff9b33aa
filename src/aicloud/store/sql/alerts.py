"""Alert rules and notifications over SQL. A state change and its notifications commit together,
so a restart neither loses a firing alert nor sends its notification twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aicloud.entities.alerts import AlertNotification, AlertRule
from aicloud.errors import ConflictError, NotFoundError
from aicloud.store.alerts import AlertStore
from aicloud.store.sql import ids
from aicloud.store.sql.session import Database
from aicloud.store.sql.tables import AlertNotificationRow, AlertRuleRow

RULE_PREFIX = "alr"
NOTIFICATION_PREFIX = "aln"


def _rule(row: AlertRuleRow) -> AlertRule:
    return AlertRule(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        signal=row.signal,
        op=row.op,
        threshold=row.threshold,
        for_s=row.for_s,
        severity=row.severity,
        created_at=row.created_at,
        params=dict(row.params or {}),
        notify=list(row.notify or []),
        state=row.state,
        state_since=row.state_since,
        fired_at=row.fired_at,
        last_value=row.last_value,
        evaluated_at=row.evaluated_at,
    )


def _notification(row: AlertNotificationRow) -> AlertNotification:
    return AlertNotification(
        id=row.id,
        rule_id=row.rule_id,
        workspace_id=row.workspace_id,
        rule_name=row.rule_name,
        status=row.status,
        target=row.target,
        payload=dict(row.payload or {}),
        delivery=row.delivery,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        sent_at=row.sent_at,
        last_error=row.last_error,
    )


class SqlAlertStore(AlertStore):
    def __init__(self, db: Database) -> None:
        self._db = db

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
        notify: list[str],
    ) -> AlertRule:
        def conflict() -> ConflictError:
            return ConflictError(
                f"alert rule {name!r} already exists in this workspace", details={"name": name}
            )

        def tx(session: Session) -> AlertRule:
            taken = session.scalar(
                select(AlertRuleRow.id).where(
                    AlertRuleRow.workspace_id == workspace_id, AlertRuleRow.name == name
                )
            )
            if taken is not None:
                raise conflict()
            row = AlertRuleRow(
                id=ids.new_id(RULE_PREFIX),
                workspace_id=workspace_id,
                name=name,
                signal=signal,
                params=dict(params),
                op=op,
                threshold=float(threshold),
                for_s=float(for_s),
                severity=severity,
                notify=list(notify),
                state="inactive",
                created_at=ids.utcnow(),
            )
            session.add(row)
            session.flush()
            return _rule(row)

        return self._db.run(
            tx, conflict=conflict, missing=lambda: NotFoundError.of("workspace", workspace_id)
        )

    def get_rule(self, workspace_id: str, name: str) -> AlertRule:
        def tx(session: Session) -> AlertRule:
            row = session.scalar(
                select(AlertRuleRow).where(
                    AlertRuleRow.workspace_id == workspace_id, AlertRuleRow.name == name
                )
            )
            if row is None:
                raise NotFoundError.of("alert rule", name)
            return _rule(row)

        return self._db.run(tx, write=False)

    def delete_rule(self, workspace_id: str, name: str) -> None:
        def tx(session: Session) -> None:
            rule_id = session.scalar(
                select(AlertRuleRow.id).where(
                    AlertRuleRow.workspace_id == workspace_id, AlertRuleRow.name == name
                )
            )
            if rule_id is None:
                raise NotFoundError.of("alert rule", name)
            session.execute(delete(AlertNotificationRow).where(AlertNotificationRow.rule_id == rule_id))
            session.execute(delete(AlertRuleRow).where(AlertRuleRow.id == rule_id))

        self._db.run(tx)

    def list_rules(self, workspace_id: str | None = None) -> list[AlertRule]:
        def tx(session: Session) -> list[AlertRule]:
            query = select(AlertRuleRow).order_by(AlertRuleRow.workspace_id, AlertRuleRow.name)
            if workspace_id is not None:
                query = query.where(AlertRuleRow.workspace_id == workspace_id)
            return [_rule(r) for r in session.scalars(query)]

        return self._db.run(tx, write=False)

    def transition(
        self,
        rule_id: str,
        *,
        state: str,
        state_since: datetime | None,
        fired_at: datetime | None,
        value: float | None,
        evaluated_at: datetime,
        notifications: list[tuple[str, str, dict[str, Any]]],
    ) -> AlertRule | None:
        def tx(session: Session) -> AlertRule | None:
            row = session.get(AlertRuleRow, rule_id)
            if row is None:
                return None
            row.state, row.state_since, row.fired_at = state, state_since, fired_at
            row.last_value, row.evaluated_at = value, evaluated_at
            for status, target, payload in notifications:
                session.add(
                    AlertNotificationRow(
                        id=ids.new_id(NOTIFICATION_PREFIX),
                        rule_id=row.id,
                        workspace_id=row.workspace_id,
                        rule_name=row.name,
                        status=status,
                        target=target,
                        payload=payload,
                        delivery="pending",
                        attempts=0,
                        next_attempt_at=evaluated_at,
                        created_at=evaluated_at,
                    )
                )
            session.flush()
            return _rule(row)

        return self._db.run(tx)

    def due_notifications(self, now: datetime, limit: int = 100) -> list[AlertNotification]:
        def tx(session: Session) -> list[AlertNotification]:
            rows = session.scalars(
                select(AlertNotificationRow)
                .where(
                    AlertNotificationRow.delivery == "pending", AlertNotificationRow.next_attempt_at <= now
                )
                .order_by(AlertNotificationRow.next_attempt_at, AlertNotificationRow.id)
                .limit(limit)
            )
            return [_notification(r) for r in rows]

        return self._db.run(tx, write=False)

    def mark_notification(
        self,
        notification_id: str,
        *,
        delivery: str,
        attempts: int,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"delivery": delivery, "attempts": attempts, "last_error": error}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if delivery == "sent":
            values["sent_at"] = ids.utcnow()

        def tx(session: Session) -> None:
            session.execute(
                update(AlertNotificationRow)
                .where(AlertNotificationRow.id == notification_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

        self._db.run(tx)

    def notifications(
        self, workspace_id: str, *, rule_name: str | None = None, limit: int = 100
    ) -> list[AlertNotification]:
        def tx(session: Session) -> list[AlertNotification]:
            query = select(AlertNotificationRow).where(AlertNotificationRow.workspace_id == workspace_id)
            if rule_name is not None:
                query = query.where(AlertNotificationRow.rule_name == rule_name)
            query = query.order_by(AlertNotificationRow.created_at.desc(), AlertNotificationRow.id).limit(
                limit
            )
            return [_notification(r) for r in session.scalars(query)]

        return self._db.run(tx, write=False)
