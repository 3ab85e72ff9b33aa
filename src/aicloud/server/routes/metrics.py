"""Prometheus scraping (docs/metrics.md): the control plane's ``/metrics``, each replica's metrics
through the control plane, and the http_sd discovery of those replicas. Any token of the workspace
may scrape (a viewer's, or one made with ``--scope metrics``, which can do nothing else)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aicloud.server.deps import State, Viewer
from aicloud.server.services.metrics import (
    CONTENT_TYPE,
    control_plane_metrics,
    replica_metrics,
    scrape_targets,
)

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def metrics_control_plane(principal: Viewer, state: State) -> Response:
    """The workspace's jobs by state, replicas by state, the gateway's calls by deployment, version and
    status code, its latency histograms and in-flight calls, and the controller loops' pass times."""
    text = control_plane_metrics(state, principal.workspace.id)
    return Response(text, media_type=CONTENT_TYPE)


@router.get("/metrics/replicas/{replica_id}", response_class=Response)
async def metrics_replica(replica_id: str, principal: Viewer, state: State) -> Response:
    """One replica's own metrics, each sample labelled with deployment, replica and version; 404 for
    a replica not in the workspace, 503 while it cannot be reached."""
    text = await replica_metrics(state, principal.workspace.id, replica_id)
    return Response(text, media_type=CONTENT_TYPE)


@router.get("/api/v1/prometheus/targets")
def metrics_targets(request: Request, principal: Viewer, state: State) -> list[dict[str, Any]]:
    """Prometheus ``http_sd_configs``: every replica of the workspace to scrape, as a target at this
    control plane's address (the Host the caller used) with ``__metrics_path__`` set to its path."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return scrape_targets(state, principal.workspace.id, host, request.url.scheme)
