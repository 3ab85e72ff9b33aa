"""Alert rules (docs/alerts.md): checking a new rule, and the :class:`StateFacts` the alert
controller reads its signals from (the gateway's statistics, the store, the usage report)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aicloud.controllers import alert_notify as an
from aicloud.controllers.alert_signals import SIGNALS
from aicloud.controllers.alerts import AlertController
from aicloud.entities import JobStatus
from aicloud.entities.alerts import AlertRule
from aicloud.entities.serving import ReplicaState
from aicloud.errors import NotFoundError, ValidationError
from aicloud.gateway.stats import WINDOW_S
from aicloud.schemas.alerts import AlertCreate, AlertEventOut, AlertOut
from aicloud.schemas.usage import UsageBy
from aicloud.server.services.names import check_name
from aicloud.server.services.usage import workspace_usage
from aicloud.server.state import AppState


def shown_target(target: str) -> str:
    kind, _, url = target.partition(":")
    return f"{kind}:{an.redact_url(url)}" if kind == "webhook" else target


def rule_out(rule: AlertRule) -> AlertOut:
    out = AlertOut.model_validate(rule)
    out.notify = [shown_target(t) for t in rule.notify]
    return out


def event_out(n: Any) -> AlertEventOut:
    return AlertEventOut(
        id=n.id,
        rule=n.rule_name,
        status=n.status,
        target=shown_target(n.target),
        delivery=n.delivery,
        attempts=n.attempts,
        last_error=n.last_error,
        created_at=n.created_at,
        sent_at=n.sent_at,
    )


def _duration(value: str, field: str) -> float:
    try:
        return an.parse_duration(value)
    except ValueError as exc:
        raise ValidationError.field(field, str(exc)) from None


def create_rule(state: AppState, workspace_id: str, body: AlertCreate) -> AlertRule:
    """Check every field (422 naming it), then store the rule."""
    name = check_name(body.name)
    if name == "events":  # GET /alerts/events lists notifications
        raise ValidationError.field("name", "'events' is reserved")
    signal = SIGNALS.get(body.signal)
    if signal is None:
        raise ValidationError.field(
            "signal", f"unknown signal {body.signal!r}; one of {', '.join(sorted(SIGNALS))}"
        )
    if body.op not in an.OPS:
        raise ValidationError.field("op", f"unknown op {body.op!r}; one of {' '.join(an.OPS)}")
    params: dict[str, Any] = {}
    if signal.needs_deployment:
        if not body.deployment:
            raise ValidationError.field("deployment", f"{body.signal} needs a deployment")
        try:
            state.store.deployments.get(workspace_id, body.deployment)
        except NotFoundError:
            raise ValidationError.field(
                "deployment", f"no deployment {body.deployment!r} in this workspace"
            ) from None
        params["deployment"] = body.deployment
    elif body.deployment:
        raise ValidationError.field("deployment", f"{body.signal} takes no deployment")
    if body.job:
        if not signal.takes_job:
            raise ValidationError.field("job", f"{body.signal} takes no job")
        params["job"] = body.job
    if body.window is not None:
        if not signal.windowed:
            raise ValidationError.field("window", f"{body.signal} takes no window")
        window = _duration(body.window, "window")
        if window <= 0:
            raise ValidationError.field("window", "must be longer than 0s")
        params["window_s"] = window
    for_s = _duration(body.for_, "for")
    for i, target in enumerate(body.notify):
        kind, _, url = target.partition(":")
        if kind != "webhook":
            raise ValidationError.field(f"notify[{i}]", "only webhook:http(s)://... targets are supported")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError.field(f"notify[{i}]", "a webhook URL must be http:// or https://")
    return state.store.alerts.create_rule(
        workspace_id=workspace_id,
        name=name,
        signal=body.signal,
        params=params,
        op=body.op,
        threshold=body.threshold,
        for_s=for_s,
        severity=body.severity,
        notify=list(body.notify),
    )


class StateFacts:
    """The signals' view of a running control plane (``alert_signals.Facts``)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def _stats(self, workspace_id: str, deployment: str) -> Any:
        endpoint = self.state.endpoints.get(workspace_id, deployment)
        return None if endpoint is None else endpoint.stats

    def _minutes(self, stats: Any, window_s: float) -> list[dict[str, Any]]:
        since = time.time() - window_s
        return [row for row in stats.history() if row["t"] + 60 > since]

    def latency_p99_ms(self, workspace_id: str, deployment: str, window_s: float) -> float | None:
        """Within the last minute: the worst version's p99 over it; longer: the worst minute's p99."""
        stats = self._stats(workspace_id, deployment)
        if stats is None:
            return None
        values = [v["window"]["p99_ms"] for v in stats.snapshot().values()]
        if window_s > WINDOW_S:
            values += [row["p99_ms"] for row in self._minutes(stats, window_s)]
        present = [v for v in values if v is not None]
        return max(present) if present else None

    def calls(self, workspace_id: str, deployment: str, window_s: float) -> tuple[int, int]:
        stats = self._stats(workspace_id, deployment)
        if stats is None:
            return (0, 0)
        if window_s <= WINDOW_S:
            windows = [v["window"] for v in stats.snapshot().values()]
            return (sum(w["requests"] for w in windows), sum(w["errors"] for w in windows))
        rows = self._minutes(stats, window_s)
        return (sum(r["requests"] for r in rows), sum(r["errors"] for r in rows))

    def ready_replicas(self, workspace_id: str, deployment: str) -> int:
        try:
            d = self.state.store.deployments.get(workspace_id, deployment)
        except NotFoundError:
            return 0
        return sum(1 for r in self.state.store.deployments.replicas(d.id) if r.state == ReplicaState.READY)

    def failed_jobs(self, workspace_id: str, since: datetime, name: str | None) -> int:
        jobs = self.state.store.jobs.finished_between(workspace_id, since, None)
        return sum(1 for j in jobs if j.status == JobStatus.FAILED and (name is None or j.name == name))

    def spend(self, workspace_id: str, since: datetime) -> float:
        report = workspace_usage(self.state, workspace_id, UsageBy.JOB, since.isoformat(), None)
        return float(report.total_cost or 0.0)


def controller(state: AppState) -> AlertController:
    """The control plane's alert controller, every ``alerts_interval_s`` seconds."""
    return AlertController(
        state.store,
        StateFacts(state),
        state.settings.alerts_interval_s,
        external_url=state.settings.resolved_public_url,
    )
