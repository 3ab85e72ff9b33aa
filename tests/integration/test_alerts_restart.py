"""A control plane killed (kill -9) while an alert fires: after the restart the rule is still
firing, the notification that had not gone through is retried and delivered, and nothing is
sent twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from aicloud.testing.server import ServerProcess


def test_a_killed_control_plane_keeps_firing_and_sends_once(
    make_server: Callable[..., ServerProcess],
) -> None:
    bodies: list[dict[str, Any]] = []
    answer = {"status": 500}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(answer["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
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
            rule["notify"] = [f"webhook:http://127.0.0.1:{hook.server_address[1]}/hook?token=s3cret"]
            assert c.post("/api/v1/alerts", json=rule).status_code == 201
            wait(lambda: len(bodies) == 1, "the first (failing) delivery")
            wait(lambda: c.get("/api/v1/alerts/events").json()[0]["attempts"] == 1, "the attempt recorded")
        srv.kill()
        answer["status"] = 200
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
        hook.shutdown()
        hook.server_close()
