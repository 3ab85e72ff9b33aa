"""A p99-latency rule on a real deployment: slow calls through the gateway make it fire into a real
local webhook; deleted, it sends nothing more."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from aicloud import Client
from aicloud.testing.server import ServerProcess
from webhooks import Receiver

SERVICE = """
import time

from aicloud import Service, handler


class Slow(Service):
    @handler
    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "ok"
"""


def test_slow_calls_fire_a_p99_rule(make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    hook = Receiver()
    bodies = hook.bodies
    srv = make_server(env={"AICLOUD_ALERTS_INTERVAL_S": "0.5"})
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "slow.py").write_text(SERVICE)
    try:
        with Client(url=srv.url, token=srv.token) as client:
            dep = client.deployments.create("slow", service=tmp_path / "svc", entrypoint="slow.py:Slow")
            dep = dep.wait_ready(timeout=180)
            client.alerts.create(
                "slow-p99",
                signal="deployment.p99_latency_ms",
                deployment="slow",
                window="1m",
                op=">",
                threshold=20,
                for_="0s",
                severity="page",
                notify=[f"webhook:{hook.url}"],
            )
            for _ in range(5):
                assert dep.call("nap", {"seconds": 0.06}) == "ok"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not bodies:
                time.sleep(0.2)
            (body,) = bodies
            assert body["status"] == "firing"
            assert body["alerts"][0]["labels"] == {
                "alertname": "slow-p99",
                "severity": "page",
                "signal": "deployment.p99_latency_ms",
                "deployment": "slow",
            }
            assert client.alerts.get("slow-p99").state == "firing"
            assert (client.alerts.get("slow-p99").last_value or 0) > 20
            client.alerts.delete("slow-p99")
            for _ in range(3):
                dep.call("nap", {"seconds": 0.06})
            time.sleep(2.0)
            assert len(bodies) == 1
    finally:
        hook.close()
