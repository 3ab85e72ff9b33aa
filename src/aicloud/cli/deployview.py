"""How the CLI shows a deployment: its summary, its versions with their traffic and request
statistics (a canary side by side), and a roll or traffic change in progress until it is done."""

from __future__ import annotations

import time
from typing import Any

from aicloud.cli.common import console, table
from aicloud.client import Deployment
from aicloud.errors import AicloudError
from aicloud.schemas.serving import DeploymentOut

__all__ = ["parse_placement", "parse_traffic", "render_deployment", "render_versions", "wait_rolled"]


def parse_traffic(text: str) -> dict[str, int]:
    """``3=90,4=10`` → ``{"3": 90, "4": 10}`` (the server checks the versions and weights)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        version, sep, weight = part.partition("=")
        if not sep or not weight.strip().isdigit():
            raise ValueError(f"--traffic {text!r}: give VERSION=WEIGHT pairs, e.g. 3=90,4=10")
        out[version.strip().lstrip("v")] = int(weight)
    if not out:
        raise ValueError("--traffic is empty: give VERSION=WEIGHT pairs, e.g. 3=90,4=10")
    return out


def parse_placement(text: str) -> dict[str, Any]:
    """``edge:site=shop1,zone=eu`` → ``{"edge": {"site": "shop1", "zone": "eu"}}`` (``edge``: every
    edge node); the server checks the labels."""
    kind, _, labels = text.strip().partition(":")
    if kind.strip() != "edge":
        raise ValueError(f"--placement {text!r}: give edge:LABEL=VALUE,..., e.g. edge:site=shop1,zone=eu")
    selector: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in labels.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--placement {text!r}: labels are LABEL=VALUE pairs, e.g. edge:site=shop1")
        selector[key.strip()] = value.strip()
    return {"edge": selector}


def _placement(spec: dict[str, Any]) -> str:
    placement = spec.get("placement") or {}
    labels = ",".join(f"{k}={v}" for k, v in sorted((placement.get("edge") or {}).items())) or "any node"
    cap = f", at most {placement['replicas']} nodes" if placement.get("replicas") else ""
    return f"edge {labels}{cap}"


def render_deployment(d: Deployment, metrics: dict[str, Any] | None = None) -> None:
    info = d.info
    spec = info.spec
    console.print(f"[bold]{info.name}[/] {info.status.value}  {source(info)}  generation {info.generation}")
    console.print(f"  url {d.url}")
    scaling = (
        f"placed on {_placement(spec)}"
        if spec.get("placement")
        else f"min {spec.get('min_replicas')}, max {spec.get('max_replicas')}"
    )
    console.print(
        f"  replicas {_live(info)} (desired {info.desired_replicas}, {scaling}), "
        f"batch ≤ {spec.get('max_batch_size')}"
        f" within {spec.get('max_wait_ms')} ms, cpus {spec.get('cpus')}"
        f" ({spec.get('batch_workers') or 1} batch worker(s))",
        markup=False,
    )
    for r in info.replicas:
        version = f" v{r.version}" if r.version is not None else ""
        node = f" on edge node {r.node or r.node_id}" if r.node_id else ""
        console.print(f"    {r.id} gen {r.generation}{version} {r.state.value}{node}", markup=False)
        if r.runtime:  # not markup: the reason holds brackets of its own
            console.print(f"      runtime {r.runtime}", markup=False, highlight=False)
    if metrics is not None and (info.traffic or any(v.get("requests") for v in metrics.get("versions", []))):
        render_versions(metrics)
    if info.message:  # not markup: a replica's log lines hold brackets ("[aicloud replica] ...")
        console.print("  " + info.message, style="red", markup=False, highlight=False)


def render_versions(metrics: dict[str, Any]) -> None:
    """One row per version: its share of the traffic, replicas, and the gateway's statistics."""
    rows = []
    for v in metrics["versions"]:
        window = v.get("window") or {}
        rows.append(
            [
                f"v{v['version']}" if v.get("version") is not None else "service",
                f"{v['percent']:g}%",
                f"{v['ready']}/{v['replicas']}",
                v["requests"],
                v["errors"],
                _ms(v.get("p50_ms")),
                _ms(v.get("p99_ms")),
                f"{window.get('rate_per_s', 0):g}/s",
                f"{100 * window.get('error_rate', 0):.2g}%",
            ]
        )
    console.print(
        table(
            "versions (since the control plane started)",
            ["version", "traffic", "ready", "requests", "errors", "p50", "p99", "rate 60s", "errors 60s"],
            rows,
        )
    )


def source(info: DeploymentOut) -> str:
    """What a deployment serves: ``digits@production → v2`` (the version its model reference names
    now), ``churn:3 → v3 90% · v4 10%`` with a canary, or the Service's entry point (``embed.py:Embed
    with minilm@production → v1`` when the Service uses a model)."""
    spec, version = info.spec, info.model_version
    ref = spec.get("model")
    if not ref:
        return str((spec.get("service") or {}).get("entrypoint") or "service")
    shown = f"{ref} → v{version}" if version is not None else str(ref)
    if info.traffic:
        total = sum(info.traffic.values()) or 1
        split = " · ".join(f"v{n} {100 * w / total:g}%" for n, w in sorted(info.traffic.items(), key=_number))
        shown = f"{ref} → {split}"
    if "@" in str(ref) and spec.get("track_alias") is False:
        shown += " (track_alias: false)"
    entrypoint = (spec.get("service") or {}).get("entrypoint")
    return f"{entrypoint} with {shown}" if entrypoint else shown  # a Service's self.model


def _number(item: tuple[str, int]) -> int:
    return int(item[0]) if item[0].isdigit() else 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"


def _live(info: DeploymentOut) -> int:
    """Replicas running or starting (a failed one's row stays for its log: docs/serving.md)."""
    return sum(r.state.value != "failed" for r in info.replicas)


def _served(info: DeploymentOut) -> set[int | None]:
    """The version numbers served now (weight above 0), or {None} for a Service."""
    if info.traffic:
        return {int(n) for n, w in info.traffic.items() if w > 0}
    return {info.model_version}


def wait_rolled(d: Deployment, timeout: float) -> None:
    """Show a roll or a traffic change until every version served has a ready replica of the
    current generation and no other replica is left (failed ones keep their row for the log)."""
    deadline = time.monotonic() + timeout
    with console.status(f"updating {d.name} …") as progress:
        while True:
            info = d.refresh().info
            served = _served(info)
            live = [r for r in info.replicas if r.state.value != "failed"]
            new = [r for r in live if r.generation == info.generation and r.version in served]
            old = [r for r in live if r not in new]
            ready = {r.version for r in new if r.state.value == "ready"}
            progress.update(
                f"updating {d.name} (generation {info.generation}): {len(ready)}/{len(served)} version(s) "
                f"serving, {len(old)} old replica(s) left ({info.status.value})"
            )
            if info.status.value == "failed":
                raise AicloudError(f"deployment {d.name} failed: {info.message}")
            if not old and (ready >= served or info.desired_replicas == 0):
                return
            if time.monotonic() > deadline:
                raise AicloudError(
                    f"deployment {d.name} still rolling after {timeout:.0f} s; "
                    f"see `aicloud deploy show {d.name}` and `aicloud deploy logs {d.name}`"
                )
            time.sleep(0.3)
