"""The control plane's Prometheus metrics (``GET /metrics``), its scrape targets (Prometheus'
``http_sd_configs`` JSON) and each replica's own metrics relabelled with the deployment, replica
and model version they come from (``GET /metrics/replicas/{replica_id}``).

The control plane's package has no prometheus_client (that is the workload runtime's), so the text
exposition format (version 0.0.4) is written here. Everything is read when scraped: counts from the
store, the gateway's in-memory statistics (:mod:`aicloud.gateway.stats`), the controllers' pass
timings. A scrape sees one workspace: the scrape token's. Names and labels: docs/metrics.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import httpx

from aicloud.entities import JobStatus
from aicloud.entities.serving import ReplicaState
from aicloud.errors import NotFoundError, UnavailableError
from aicloud.gateway.stats import BOUNDS_S
from aicloud.server.services.traffic import version_numbers
from aicloud.server.state import AppState

__all__ = [
    "CONTENT_TYPE",
    "Exposition",
    "control_plane_metrics",
    "relabel",
    "replica_metrics",
    "scrape_targets",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The path Prometheus scrapes a replica at, through the control plane.
REPLICA_PATH = "/metrics/replicas/{replica_id}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


class Exposition:
    """Prometheus text exposition, one family after another (each family's samples together)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self,
        name: str,
        labels: dict[str, str],
        buckets: Iterable[int],
        bounds: tuple[float, ...],
        total: float,
    ) -> None:
        """``buckets``: counts per bucket (not cumulative), one more than ``bounds`` (the +Inf one)."""
        seen = 0
        counts = list(buckets)
        for bound, n in zip((*bounds, math.inf), counts, strict=True):
            seen += n
            self.sample(f"{name}_bucket", {**labels, "le": _number(round(bound, 6))}, seen)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, seen)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def control_plane_metrics(state: AppState, workspace_id: str) -> str:
    """The workspace's jobs, deployments, replicas and gateway traffic, and the control plane's
    controller loops, in the text format."""
    out = Exposition()
    out.family("aicloud_jobs", "gauge", "Jobs of the workspace by state")
    for status in JobStatus:
        out.sample(
            "aicloud_jobs", {"state": status.value}, state.store.jobs.count(workspace_id, status=status)
        )
    deployments = state.store.deployments.list(workspace_id)
    out.family("aicloud_deployment_replicas", "gauge", "Replicas of each deployment by state")
    for d in deployments:
        counts = dict.fromkeys(ReplicaState, 0)
        for r in state.store.deployments.replicas(d.id):
            counts[r.state] += 1
        for replica_state, n in counts.items():
            out.sample("aicloud_deployment_replicas", {"deployment": d.name, "state": replica_state.value}, n)
    out.family("aicloud_deployment_desired_replicas", "gauge", "Replicas each deployment wants now")
    for d in deployments:
        out.sample("aicloud_deployment_desired_replicas", {"deployment": d.name}, d.desired_replicas)
    _gateway(out, state, workspace_id, deployments)
    _controllers(out, state)
    return out.text()


def _gateway(out: Exposition, state: AppState, workspace_id: str, deployments: list[Any]) -> None:
    endpoints = [(d, state.endpoints.by_deployment(d.id)) for d in deployments]
    live = [(d, ep) for d, ep in endpoints if ep is not None]
    ids = {v for _, ep in live for v in ep.stats.versions if v}
    numbers = version_numbers(state, workspace_id, list(ids)) if ids else {}

    def labels(name: str, version_id: str) -> dict[str, str]:
        number = numbers.get(version_id)
        return {"deployment": name, "version": str(number) if number else "", "version_id": version_id}

    out.family(
        "aicloud_gateway_requests_total",
        "counter",
        "Calls the gateway forwarded, by deployment, model version and status code (0: no answer)",
    )
    for d, ep in live:
        for (version_id, code), n in sorted(ep.stats.codes.items()):
            out.sample("aicloud_gateway_requests_total", {**labels(d.name, version_id), "code": str(code)}, n)
    out.family(
        "aicloud_gateway_request_duration_seconds",
        "histogram",
        "Seconds from a call's arrival at the gateway to the answer's head",
    )
    for d, ep in live:
        for version_id, stats in sorted(ep.stats.versions.items()):
            out.histogram(
                "aicloud_gateway_request_duration_seconds",
                labels(d.name, version_id),
                stats.buckets,
                BOUNDS_S,
                stats.seconds,
            )
    out.family("aicloud_gateway_inflight_requests", "gauge", "Calls in flight or held for a cold start")
    for d, ep in live:
        out.sample("aicloud_gateway_inflight_requests", {"deployment": d.name}, ep.inflight)
    out.family("aicloud_gateway_ready_replicas", "gauge", "Replicas the gateway routes to now")
    for d, ep in live:
        out.sample("aicloud_gateway_ready_replicas", {"deployment": d.name}, len(ep.routable()))


def _controllers(out: Exposition, state: AppState) -> None:
    loops = [("jobs", state.jobs), ("deployments", state.deployments), ("sweeps", state.sweeps)]
    present = [(name, loop) for name, loop in loops if loop is not None]
    out.family("aicloud_controller_passes_total", "counter", "Reconcile passes each controller loop ran")
    for name, loop in present:
        out.sample("aicloud_controller_passes_total", {"controller": name}, getattr(loop, "passes", 0))
    out.family(
        "aicloud_controller_pass_seconds_total", "counter", "Seconds each controller loop spent in its passes"
    )
    for name, loop in present:
        seconds = getattr(loop, "pass_seconds", 0.0)
        out.sample("aicloud_controller_pass_seconds_total", {"controller": name}, seconds)
    out.family(
        "aicloud_controller_last_pass_seconds", "gauge", "Duration of each controller loop's last pass"
    )
    for name, loop in present:
        seconds = getattr(loop, "last_pass_seconds", 0.0)
        out.sample("aicloud_controller_last_pass_seconds", {"controller": name}, seconds)


def scrape_targets(state: AppState, workspace_id: str, host: str, scheme: str) -> list[dict[str, Any]]:
    """Prometheus http_sd: one target group per replica of the workspace that is starting or ready
    and placed on this machine, scraped through the control plane (``__metrics_path__``), with
    ``instance`` set to ``<deployment>/<replica id>``. Its ``__meta_aicloud_*`` labels are for
    relabelling; the samples carry deployment, replica and version themselves."""
    groups = []
    for d in state.store.deployments.list(workspace_id):
        replicas = [
            r
            for r in state.store.deployments.replicas(d.id)
            if r.state in (ReplicaState.STARTING, ReplicaState.READY) and r.node_id is None
        ]
        ids = [r.model_version_id for r in replicas if r.model_version_id]
        numbers = version_numbers(state, workspace_id, ids) if ids else {}
        for r in replicas:
            number = numbers.get(r.model_version_id or "")
            groups.append(
                {
                    "targets": [host],
                    "labels": {
                        "__metrics_path__": REPLICA_PATH.format(replica_id=r.id),
                        # every replica is scraped at the same address: its own instance keeps
                        # their series (``up`` first) apart
                        "instance": f"{d.name}/{r.id}",
                        "__scheme__": scheme,
                        "__meta_aicloud_deployment": d.name,
                        "__meta_aicloud_replica": r.id,
                        "__meta_aicloud_version": str(number) if number else "",
                    },
                }
            )
    return groups


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?(\s.*)$")


def relabel(text: str, labels: dict[str, str]) -> str:
    """Each sample of ``text`` (the text format) with ``labels`` added in front of its own; a sample
    that has one of those labels already keeps its value under ``exported_<name>``."""
    extra = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line) if line and not line.startswith("#") else None
        if match is None:
            out.append(line)
            continue
        name, own, rest = match.groups()
        inner = own[1:-1] if own else ""
        for key in labels:
            inner = re.sub(rf'(^|,)\s*{key}="', rf'\1exported_{key}="', inner)
        joined = f"{extra},{inner}" if inner else extra
        out.append(f"{name}{{{joined}}}{rest}")
    return "\n".join(out) + "\n"


async def replica_metrics(state: AppState, workspace_id: str, replica_id: str) -> str:
    """A replica's own ``/metrics``, fetched with its key, each sample labelled with ``deployment``,
    ``replica`` and ``version`` (the model version's number; empty for a Service)."""
    for d in state.store.deployments.list(workspace_id):
        replica = next((r for r in state.store.deployments.replicas(d.id) if r.id == replica_id), None)
        if replica is not None:
            break
    else:
        raise NotFoundError(f"no replica {replica_id!r} in this workspace", details={"field": "replica_id"})
    ep = state.endpoints.by_deployment(d.id)
    slot = ep.replicas.get(replica_id) if ep is not None else None
    if slot is None or not slot.url:
        raise UnavailableError(f"replica {replica_id!r} is not reachable from the gateway now")
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            reply = await http.get(f"{slot.url}/metrics", headers={"Authorization": f"Bearer {slot.key}"})
    except httpx.HTTPError as exc:
        raise UnavailableError(f"replica {replica_id!r} did not answer: {type(exc).__name__}") from None
    if reply.status_code != 200:
        raise UnavailableError(f"replica {replica_id!r} answered {reply.status_code} to /metrics")
    number = None
    if replica.model_version_id:
        number = version_numbers(state, workspace_id, [replica.model_version_id]).get(
            replica.model_version_id
        )
    labels = {"deployment": d.name, "replica": replica_id, "version": str(number) if number else ""}
    return relabel(reply.text, labels)
