"""A control plane killed (kill -9) while an alert fires: after the restart the rule is still
firing, the notification that had not gone through is retried and delivered, and nothing is
sent twice."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from aicloud.testing.server import ServerProcess
from webhooks import Receiver


def test_a_killed_control_plane_keeps_firing_and_sends_once(
    make_server: Callable[..., ServerProcess],
) -> None:
    hook = Receiver()
    hook.status = 500
    bodies = hook.bodies
    srv = make_server(env={"AICLOUD_ALERTS_INTERVAL_S": "0.5"})

    def api() -> httpx.Client:
        return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60)

    def wait(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    try:
        with api() as c:
            rule = {"name": "always", "signal": "jobs.failed", "op": ">=", "threshold": 0, "severity": "page"}
            rule["notify"] = [f"webhook:{hook.url}"]
            assert c.post("/api/v1/alerts", json=rule).status_code == 201
            wait(lambda: len(bodies) == 1, "the first (failing) delivery")
            wait(lambda: c.get("/api/v1/alerts/events").json()[0]["attempts"] == 1, "the attempt recorded")
        srv.kill()
        hook.status = 200
        srv.start()
        with api() as c:
            wait(
                lambda: c.get("/api/v1/alerts/events").json()[0]["delivery"] == "sent",
                "the retry after restart",
            )
            time.sleep(2.0)  # a few evaluations at 0.5 s
            (event,) = c.get("/api/v1/alerts/events").json()
            assert (event["status"], event["delivery"], event["attempts"]) == ("firing", "sent", 2)
            assert c.get("/api/v1/alerts/always").json()["state"] == "firing"
        assert len(bodies) == 2 and all(b["status"] == "firing" for b in bodies)
        assert "s3cret" not in srv.output()
    finally:
        hook.close()
