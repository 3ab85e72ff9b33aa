"""/api/v1/alerts on a real server: a rule that holds at once fires into a real local webhook,
fields are checked (422 naming the field), another workspace's rule is a 404, viewers cannot write."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from aicloud.testing.server import ServerProcess
from webhooks import Receiver


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    receiver = Receiver()
    yield receiver.url, receiver.bodies
    receiver.close()


def test_a_rule_fires_into_a_webhook_and_is_listed_with_its_event(
    http: httpx.Client, unique: Callable[[str], str], hook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, bodies = hook
    name = unique("nofail")
    made = http.post(
        "/api/v1/alerts",
        json={
            "name": name,
            "signal": "jobs.failed",
            "op": ">=",
            "threshold": 0,
            "for": "0s",
            "window": "1h",
            "severity": "page",
            "notify": [f"webhook:{url}"],
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["params"] == {"window_s": 3600.0}
    assert "s3cret" not in made.text and made.json()["notify"] == [f"webhook:{url.split('/hook')[0]}/…"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(b["groupLabels"]["alertname"] == name for b in bodies):
        time.sleep(0.2)
    body = next(b for b in bodies if b["groupLabels"]["alertname"] == name)
    assert body["status"] == "firing" and body["alerts"][0]["labels"]["severity"] == "page"
    assert http.get(f"/api/v1/alerts/{name}").json()["state"] == "firing"
    assert name in [r["name"] for r in http.get("/api/v1/alerts").json()]
    while time.monotonic() < deadline:
        events = http.get("/api/v1/alerts/events", params={"name": name}).json()
        if events and events[0]["delivery"] == "sent":
            break
        time.sleep(0.2)
    assert [(e["status"], e["delivery"]) for e in events] == [("firing", "sent")]
    assert http.delete(f"/api/v1/alerts/{name}").status_code == 204
    assert http.get(f"/api/v1/alerts/{name}").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"signal": "nope"}, "signal"),
        ({"name": "events"}, "name"),
        ({"op": "=>"}, "op"),
        ({"for": "soon"}, "for"),
        ({"window": "-5m"}, "window"),
        ({"notify": ["email:a@b.c"]}, "notify[0]"),
        ({"notify": ["webhook:ftp://x/y"]}, "notify[0]"),
        ({"signal": "deployment.p99_latency_ms", "deployment": "no-such-dep"}, "deployment"),
        ({"signal": "deployment.p99_latency_ms"}, "deployment"),
    ],
)
def test_bad_fields_are_422_naming_the_field(
    http: httpx.Client, unique: Callable[[str], str], change: dict[str, Any], field: str
) -> None:
    body = {"name": unique("bad"), "signal": "jobs.failed", "op": ">", "threshold": 1, **change}
    r = http.post("/api/v1/alerts", json=body)
    assert r.status_code == 422, r.text
    assert field in r.text and "Traceback" not in r.text
    if field != "name":  # /alerts/events is the events list
        assert http.get(f"/api/v1/alerts/{body['name']}").status_code == 404


def test_another_workspaces_rule_is_404_and_viewers_cannot_write(
    http: httpx.Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    name = unique("mine")
    rule = {"name": name, "signal": "workspace.spend_per_day", "op": ">", "threshold": 100}
    assert http.post("/api/v1/alerts", json=rule).status_code == 201
    ws = http.post("/api/v1/workspaces", json={"name": unique("alerts-ws")}).json()
    other = {"Authorization": f"Bearer {ws['admin_token']['token']}"}
    with httpx.Client(base_url=server.url, headers=other, timeout=60) as c:
        assert c.get(f"/api/v1/alerts/{name}").status_code == 404
        assert c.delete(f"/api/v1/alerts/{name}").status_code == 404
        assert name not in [r["name"] for r in c.get("/api/v1/alerts").json()]
        viewer = c.post("/api/v1/tokens", json={"name": "v", "role": "viewer"}).json()["token"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {viewer}"}, timeout=60) as v:
        assert v.get("/api/v1/alerts").status_code == 200
        assert v.post("/api/v1/alerts", json={**rule, "name": unique("v")}).status_code == 403
    assert http.delete(f"/api/v1/alerts/{name}").status_code == 204
