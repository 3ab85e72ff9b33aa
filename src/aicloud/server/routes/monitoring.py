"""Monitoring of the workspace's data: drift reports between dataset versions (viewers may read them)."""

from __future__ import annotations

from fastapi import APIRouter

from aicloud.schemas.monitoring import DriftReport, DriftRequest
from aicloud.server.deps import State, Viewer
from aicloud.server.services.monitoring import drift_report

router = APIRouter(tags=["monitoring"])


@router.post("/monitoring/drift", response_model=DriftReport)
def monitoring_drift(body: DriftRequest, principal: Viewer, state: State) -> DriftReport:
    """Per-column drift of the ``current`` dataset version against the ``reference`` one: a
    Kolmogorov-Smirnov or chi-square test below 1,000 values, a Wasserstein or Jensen-Shannon
    distance above, and the share of drifted columns (``drift_score``). Computed in a parser worker;
    an unknown dataset is a 404 naming the field."""
    return drift_report(state, principal.workspace.id, body)
