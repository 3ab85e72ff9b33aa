"""The alert controller on a real SQLite store with a real local webhook receiver: a rule fires
once, resolves once, a failing webhook is retried then marked failed without stopping the
evaluator, and a controller started again over the same database neither loses nor re-sends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aicloud.controllers.alerts import AlertController, AlertSender
from aicloud.store import MetadataStore, open_store
from webhooks import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Facts:
    def __init__(self) -> None:
        self.p99: float | None = None

    def latency_p99_ms(self, workspace_id: str, deployment: str, window_s: float) -> float | None:
        return self.p99

    def calls(self, workspace_id: str, deployment: str, window_s: float) -> tuple[int, int]:
        return (0, 0)

    def ready_replicas(self, workspace_id: str, deployment: str) -> int:
        return 1

    def failed_jobs(self, workspace_id: str, since: datetime, name: str | None) -> int:
        return 0

    def spend(self, workspace_id: str, since: datetime) -> float:
        return 0.0


def _setup(tmp_path: Path, url: str) -> tuple[MetadataStore, str]:
    store = open_store(f"sqlite:///{tmp_path / 'meta.db'}")
    ws = store.workspaces.create("alerting")
    store.alerts.create_rule(
        workspace_id=ws.id,
        name="slow",
        signal="deployment.p99_latency_ms",
        params={"deployment": "digits", "window_s": 60.0},
        op=">",
        threshold=50,
        for_s=0,
        severity="page",
        notify=[f"webhook:{url}"],
    )
    return store, ws.id


def _controller(store: MetadataStore, facts: Facts, **sender: Any) -> AlertController:
    return AlertController(
        store, facts, 60.0, external_url="http://cp", sender=AlertSender(store, timeout_s=5.0, **sender)
    )


def test_fires_once_resolves_once_and_survives_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    store, ws = _setup(tmp_path, receiver.url)
    facts = Facts()
    ctl = _controller(store, facts)
    facts.p99 = 80.0
    ctl.reconcile_once()
    assert ctl.sender.send_due() == 1
    (body,) = receiver.bodies
    assert body["status"] == "firing" and body["version"] == "4"
    assert body["alerts"][0]["labels"]["deployment"] == "digits"
    ctl.reconcile_once()  # still firing: nothing new
    assert ctl.sender.send_due() == 0 and len(receiver.bodies) == 1

    store.close()  # "restart": a new store and controller over the same database
    store = open_store(f"sqlite:///{tmp_path / 'meta.db'}")
    ctl = _controller(store, facts)
    assert store.alerts.get_rule(ws, "slow").state == "firing"
    ctl.reconcile_once()
    assert ctl.sender.send_due() == 0 and len(receiver.bodies) == 1

    facts.p99 = 10.0
    ctl.reconcile_once()
    assert ctl.sender.send_due() == 1
    assert receiver.bodies[-1]["status"] == "resolved" and receiver.bodies[-1]["alerts"][0]["endsAt"] != ""
    events = store.alerts.notifications(ws, rule_name="slow")
    assert [(e.status, e.delivery) for e in events] == [("resolved", "sent"), ("firing", "sent")]
    store.close()


def test_an_unsent_notification_is_retried_after_a_restart_then_marked_failed(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    store, ws = _setup(tmp_path, receiver.url)
    facts = Facts()
    facts.p99 = 80.0
    ctl = _controller(store, facts, max_attempts=3, backoff=lambda n: 0.0)
    ctl.reconcile_once()
    ctl.sender.send_due()
    (event,) = store.alerts.notifications(ws)
    assert (event.delivery, event.attempts, event.last_error) == ("pending", 1, "HTTP 500")
    store.close()

    store = open_store(f"sqlite:///{tmp_path / 'meta.db'}")
    ctl = _controller(store, facts, max_attempts=3, backoff=lambda n: 0.0)
    ctl.reconcile_once()  # the evaluator goes on; no second firing notification
    ctl.sender.send_due()
    ctl.sender.send_due()
    (event,) = store.alerts.notifications(ws)
    assert (event.delivery, event.attempts) == ("failed", 3)
    assert len(receiver.bodies) == 3 and ctl.sender.send_due() == 0
    assert "s3cret" not in caplog.text
    store.close()


def test_a_webhook_that_does_not_answer_times_out_and_the_loop_keeps_evaluating(
    tmp_path: Path, receiver: Receiver
) -> None:
    store, ws = _setup(tmp_path, "http://127.0.0.1:9/closed")
    facts = Facts()
    facts.p99 = 80.0
    ctl = _controller(store, facts, max_attempts=2, backoff=lambda n: 0.0, poll_s=0.05)
    ctl.interval = 0.05
    ctl.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = store.alerts.notifications(ws)
            if events and events[0].delivery == "failed":
                break
            time.sleep(0.05)
        assert [e.delivery for e in store.alerts.notifications(ws)] == ["failed"]
        passes = ctl.passes
        time.sleep(0.5)
        assert ctl.passes > passes
    finally:
        ctl.stop()
        store.close()
