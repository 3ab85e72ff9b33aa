"""Alert rules in the SDK (docs/alerts.md)::

client.alerts.create("digits-slow", signal="deployment.p99_latency_ms", deployment="digits",
                     op=">", threshold=50, for_="2m", severity="page",
                     notify=["webhook:https://hooks.example.com/..."])
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aicloud.schemas.alerts import AlertEventOut, AlertOut

if TYPE_CHECKING:
    from aicloud.client.http import Transport

__all__ = ["AlertEventOut", "AlertOut", "AlertsAPI"]


class AlertsAPI:
    """``client.alerts``: the workspace's alert rules and their notifications."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def create(
        self,
        name: str,
        *,
        signal: str,
        op: str,
        threshold: float,
        deployment: str | None = None,
        job: str | None = None,
        window: str | None = None,
        for_: str = "0s",
        severity: str = "warning",
        notify: Sequence[str] = (),
    ) -> AlertOut:
        """A rule: it fires once ``signal op threshold`` has held ``for_`` (e.g. ``"2m"``).

        Raises:
            ValidationError: an unknown signal or deployment, a bad op, duration or notify target
                (the error's details name the field).
            ConflictError: a rule of that name exists.
        """
        body: dict[str, Any] = {
            "name": name,
            "signal": signal,
            "op": op,
            "threshold": threshold,
            "for": for_,
            "severity": severity,
            "notify": list(notify),
        }
        for key, value in (("deployment", deployment), ("job", job), ("window", window)):
            if value is not None:
                body[key] = value
        return AlertOut.model_validate(self._transport.json("POST", "/api/v1/alerts", json=body, retry=False))

    def list(self) -> builtins.list[AlertOut]:
        return [AlertOut.model_validate(r) for r in self._transport.json("GET", "/api/v1/alerts")]

    def get(self, name: str) -> AlertOut:
        """Raises NotFoundError."""
        return AlertOut.model_validate(self._transport.json("GET", f"/api/v1/alerts/{quote(name, safe='')}"))

    def delete(self, name: str) -> None:
        """Raises NotFoundError."""
        self._transport.request("DELETE", f"/api/v1/alerts/{quote(name, safe='')}")

    def events(self, name: str | None = None, limit: int = 100) -> builtins.list[AlertEventOut]:
        """Notifications (firing, resolved) with their delivery state, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if name is not None:
            params["name"] = name
        items = self._transport.json("GET", "/api/v1/alerts/events", params=params)
        return [AlertEventOut.model_validate(e) for e in items]
