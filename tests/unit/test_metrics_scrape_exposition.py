"""The control plane's Prometheus text exposition, the replica relabelling and the scrape scope."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from aicloud.errors import PermissionDeniedError
from aicloud.gateway.stats import BOUNDS_S, EndpointStats
from aicloud.server.deps import check_scope
from aicloud.server.services.metrics import Exposition, relabel


def test_histogram_is_cumulative_with_sum_count_and_inf() -> None:
    stats = EndpointStats()
    for seconds, status in ((0.001, 200), (0.002, 200), (0.5, 503), (500.0, 0)):
        stats.record("v1", seconds, status)
    out = Exposition()
    out.family("x_seconds", "histogram", "h")
    v = stats.versions["v1"]
    out.histogram("x_seconds", {"deployment": "d"}, v.buckets, BOUNDS_S, v.seconds)
    lines = out.text().splitlines()
    assert lines[:2] == ["# HELP x_seconds h", "# TYPE x_seconds histogram"]
    buckets = [line for line in lines if line.startswith("x_seconds_bucket")]
    assert len(buckets) == len(BOUNDS_S) + 1
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert counts == sorted(counts) and counts[-1] == 4
    assert buckets[-1] == 'x_seconds_bucket{deployment="d",le="+Inf"} 4'
    assert 'x_seconds_count{deployment="d"} 4' in lines
    assert any(line.startswith('x_seconds_sum{deployment="d"} 500.50') for line in lines)
    assert stats.codes == {("v1", 200): 2, ("v1", 503): 1, ("v1", 0): 1}


def test_label_values_are_escaped() -> None:
    out = Exposition()
    out.sample("m", {"a": 'q"\\\n'}, 1.5)
    assert out.text() == 'm{a="q\\"\\\\\\n"} 1.5\n'


def test_relabel_adds_identity_labels_and_keeps_clashing_ones() -> None:
    text = (
        "# HELP aicloud_requests_total r\n# TYPE aicloud_requests_total counter\n"
        'aicloud_requests_total{route="/predict",code="200"} 3.0\n'
        "aicloud_inflight_requests 0.0\n"
        'odd{replica="theirs"} 1\n'
    )
    got = relabel(text, {"deployment": "digits", "replica": "rep_1", "version": "2"}).splitlines()
    assert got[:2] == text.splitlines()[:2]
    assert got[2] == (
        "aicloud_requests_total"
        '{deployment="digits",replica="rep_1",version="2",route="/predict",code="200"} 3.0'
    )
    assert got[3] == 'aicloud_inflight_requests{deployment="digits",replica="rep_1",version="2"} 0.0'
    assert got[4] == 'odd{deployment="digits",replica="rep_1",version="2",exported_replica="theirs"} 1'


@pytest.mark.parametrize(
    ("route", "allowed"),
    [
        ("metrics_control_plane", True),
        ("metrics_targets", True),
        ("metrics_replica", True),
        ("jobs_list", False),
    ],
)
def test_a_scrape_token_reaches_only_the_metrics_routes(route: str, allowed: bool) -> None:
    principal = SimpleNamespace(token=SimpleNamespace(scope="metrics"))
    request = SimpleNamespace(scope={"route": SimpleNamespace(name=route)})
    if allowed:
        check_scope(principal, request)  # type: ignore[arg-type]
    else:
        with pytest.raises(PermissionDeniedError):
            check_scope(principal, request)  # type: ignore[arg-type]


def test_the_grafana_dashboard_uses_only_documented_names() -> None:
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "deploy/grafana/aicloud.json").read_text())
    docs = (root / "docs/metrics.md").read_text()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"aicloud_[a-z_]+", e)}
    assert names and all(f"`{n}`" in docs for n in names), names - set(
        re.findall(r"`(aicloud_[a-z_]+)`", docs)
    )
