"""Pure parts of alerting (docs/alerts.md): the rule's state machine, the Alertmanager-shaped
webhook payload, the retry schedule, and redacting a webhook URL for logs. No I/O here."""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aicloud.entities.alerts import AlertRule

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

#: Delivery attempts per notification before it is marked failed.
MAX_ATTEMPTS = 5
#: The first retry waits this many seconds; each next one twice as long, up to BACKOFF_CAP_S.
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int) -> float:
    """``"2m"`` → 120.0; a bare number is seconds. Raises ValueError on anything else or a negative."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text!r}")
        return float(text)
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def backoff_s(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed tries: 2, 4, 8, ... capped at BACKOFF_CAP_S."""
    return min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_CAP_S)


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…`` for logs: never the path, query or credentials (they may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class Step:
    """Where a rule goes after one evaluation, and which notification that sends (None: none)."""

    state: str
    state_since: datetime | None
    fired_at: datetime | None
    event: str | None  # "firing" | "resolved" | None


def step(rule: AlertRule, value: float | None, now: datetime) -> Step:
    """The state machine: inactive → pending while the condition holds, → firing once it has held
    ``for_s`` seconds (at once when 0), → resolved (back to inactive) when it stops holding.
    A value of None (no data) does not hold. Staying firing sends nothing again."""
    holds = value is not None and OPS[rule.op](value, rule.threshold)
    if not holds:
        if rule.state == "firing":
            return Step("inactive", now, None, "resolved")
        return Step("inactive", rule.state_since if rule.state == "inactive" else now, None, None)
    if rule.state == "firing":
        return Step("firing", rule.state_since, rule.fired_at, None)
    since = rule.state_since if rule.state == "pending" and rule.state_since is not None else now
    if now - since >= timedelta(seconds=rule.for_s):
        return Step("firing", now, now, "firing")
    return Step("pending", since, None, None)


def _iso(when: datetime | None) -> str:
    return when.isoformat().replace("+00:00", "Z") if when is not None else "0001-01-01T00:00:00Z"


def labels(rule: AlertRule) -> dict[str, str]:
    out = {"alertname": rule.name, "severity": rule.severity, "signal": rule.signal}
    for key in ("deployment", "job"):
        if rule.params.get(key):
            out[key] = str(rule.params[key])
    return out


def fingerprint(rule: AlertRule) -> str:
    text = "\0".join(f"{k}={v}" for k, v in sorted(labels(rule).items()))
    return hashlib.sha256(f"{rule.workspace_id}\0{text}".encode()).hexdigest()[:16]


def payload(
    rule: AlertRule,
    status: str,
    *,
    value: float | None,
    starts_at: datetime | None,
    ends_at: datetime | None,
    receiver: str,
    external_url: str,
) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one rule's alert, ``status`` firing or resolved."""
    rule_labels = labels(rule)
    shown = "no data" if value is None else f"{value:g}"
    annotations = {
        "summary": f"{rule.signal} {rule.op} {rule.threshold:g} ({status})",
        "description": f"{rule.name}: {rule.signal} is {shown}, threshold {rule.op} {rule.threshold:g}",
    }
    base = external_url.rstrip("/")
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{rule.name}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": rule.name},
        "commonLabels": rule_labels,
        "commonAnnotations": annotations,
        "externalURL": base,
        "alerts": [
            {
                "status": status,
                "labels": rule_labels,
                "annotations": annotations,
                "startsAt": _iso(starts_at),
                "endsAt": _iso(ends_at),
                "generatorURL": f"{base}/api/v1/alerts/{rule.name}",
                "fingerprint": fingerprint(rule),
            }
        ],
    }
