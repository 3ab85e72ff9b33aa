"""Monitoring in the SDK: ``client.monitoring.drift(reference="digits:1", current="digits:2")``.

Today ``current`` is a dataset version. The issue's ``drift(deployment, reference=..., window=...)``,
which compares a deployment's logged inputs over a time window with its reference, comes with
prediction logging (docs/monitoring.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aicloud.client._specs import dataset_ref
from aicloud.schemas.monitoring import DriftColumn, DriftReport

if TYPE_CHECKING:
    from aicloud.client.http import Transport

__all__ = ["DriftColumn", "DriftReport", "MonitoringAPI"]


class MonitoringAPI:
    """``client.monitoring``: drift reports between dataset versions of the workspace."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def drift(
        self,
        *,
        reference: Any,
        current: Any,
        columns: Sequence[str] | None = None,
        threshold: float = 0.5,
    ) -> DriftReport:
        """Per-column drift of ``current`` against ``reference`` (each a DatasetVersion, or
        ``name`` / ``name:version``): ``.columns`` (test, statistic, threshold, drifted per column),
        ``.drift_score`` (the share of drifted columns) and ``.drifted`` (score >= ``threshold``).

        Raises:
            NotFoundError: a dataset (version) does not exist in this workspace.
            ValidationError: a bad reference, an unknown column or a threshold outside (0, 1].
        """
        body: dict[str, Any] = {
            "reference": dataset_ref(reference),
            "current": dataset_ref(current),
            "threshold": threshold,
        }
        if columns is not None:
            body["columns"] = list(columns)
        return DriftReport.model_validate(self._transport.json("POST", "/api/v1/monitoring/drift", json=body))
