"""The pure parts of alerting: durations, the state machine, the retry schedule, the webhook
payload's shape, URL redaction, and the signal registry on fake facts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aicloud.controllers import alert_notify as an
from aicloud.controllers import alert_signals as sig
from aicloud.entities.alerts import AlertRule

T0 = datetime(2026, 12, 8, 4, 0, tzinfo=UTC)


def _rule(**kw: object) -> AlertRule:
    base = AlertRule(
        id="alr_1",
        workspace_id="ws_1",
        name="slow",
        signal="deployment.p99_latency_ms",
        op=">",
        threshold=50.0,
        for_s=120.0,
        severity="page",
        created_at=T0,
        params={"deployment": "digits"},
        notify=["webhook:http://x/y"],
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _apply(rule: AlertRule, s: an.Step) -> AlertRule:
    return replace(rule, state=s.state, state_since=s.state_since, fired_at=s.fired_at)


@pytest.mark.parametrize(
    ("text", "seconds"), [("2m", 120.0), ("0s", 0.0), ("1h", 3600.0), ("15", 15.0), (30, 30.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert an.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "-1s", "m", -3, True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        an.parse_duration(bad)  # type: ignore[arg-type]


def test_pending_then_firing_after_for_then_resolved_once() -> None:
    rule = _rule()
    s = an.step(rule, 80.0, T0)
    assert (s.state, s.event) == ("pending", None)
    rule = _apply(rule, s)
    s = an.step(rule, 80.0, T0 + timedelta(seconds=60))
    assert (s.state, s.state_since, s.event) == ("pending", T0, None)
    rule = _apply(rule, s)
    s = an.step(rule, 80.0, T0 + timedelta(seconds=120))
    assert (s.state, s.event, s.fired_at) == ("firing", "firing", T0 + timedelta(seconds=120))
    rule = _apply(rule, s)
    s = an.step(rule, 90.0, T0 + timedelta(seconds=135))  # still firing: nothing sent again
    assert (s.state, s.event) == ("firing", None)
    rule = _apply(rule, s)
    s = an.step(rule, 10.0, T0 + timedelta(seconds=150))
    assert (s.state, s.event) == ("inactive", "resolved")
    rule = _apply(rule, s)
    assert an.step(rule, 10.0, T0 + timedelta(seconds=165)).event is None


def test_a_pending_rule_that_stops_holding_never_fires_and_no_data_does_not_hold() -> None:
    rule = _apply(_rule(), an.step(_rule(), 80.0, T0))
    s = an.step(rule, None, T0 + timedelta(seconds=200))
    assert (s.state, s.event) == ("inactive", None)
    assert an.step(_rule(for_s=0.0), 80.0, T0).event == "firing"
    assert an.step(_rule(for_s=0.0, op="<", threshold=1), 1.0, T0).event is None


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [an.backoff_s(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert an.backoff_s(30) == an.BACKOFF_CAP_S


def test_redacted_urls_keep_no_path_query_or_credentials() -> None:
    shown = an.redact_url("https://user:pw@hooks.example.com:8443/T0K3N/x?key=s3cret")
    assert shown == "https://hooks.example.com:8443/…"
    assert "s3cret" not in shown and "T0K3N" not in shown and "pw" not in shown


def test_payload_has_alertmanagers_webhook_shape() -> None:
    rule = _rule()
    body = an.payload(
        rule,
        "firing",
        value=80.0,
        starts_at=T0,
        ends_at=None,
        receiver="webhook",
        external_url="http://cp:8080/",
    )
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "webhook"
    assert set(body) >= {
        "groupKey",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    (alert,) = body["alerts"]
    assert alert["labels"] == {
        "alertname": "slow",
        "severity": "page",
        "signal": "deployment.p99_latency_ms",
        "deployment": "digits",
    }
    assert set(alert["annotations"]) == {"summary", "description"}
    assert alert["startsAt"] == "2026-12-08T04:00:00Z" and alert["endsAt"].startswith("0001-")
    assert alert["generatorURL"] == "http://cp:8080/api/v1/alerts/slow"
    assert alert["fingerprint"] == an.fingerprint(rule) and len(alert["fingerprint"]) == 16


class FakeFacts:
    def __init__(self) -> None:
        self.asked: list[tuple[object, ...]] = []

    def latency_p99_ms(self, workspace_id: str, deployment: str, window_s: float) -> float | None:
        self.asked.append(("p99", workspace_id, deployment, window_s))
        return 42.0 if deployment == "digits" else None

    def calls(self, workspace_id: str, deployment: str, window_s: float) -> tuple[int, int]:
        return (200, 10) if deployment == "digits" else (0, 0)

    def ready_replicas(self, workspace_id: str, deployment: str) -> int:
        return 2

    def failed_jobs(self, workspace_id: str, since: datetime, name: str | None) -> int:
        self.asked.append(("failed", since, name))
        return 3 if name is None else 1

    def spend(self, workspace_id: str, since: datetime) -> float:
        self.asked.append(("spend", since))
        return 12.5


def test_signal_registry_on_fake_facts() -> None:
    facts = FakeFacts()
    assert set(sig.SIGNALS) == {
        "deployment.p99_latency_ms",
        "deployment.error_rate",
        "deployment.ready_replicas",
        "jobs.failed",
        "workspace.spend_per_day",
    }
    assert (
        sig.evaluate(facts, "deployment.p99_latency_ms", "ws", {"deployment": "digits", "window_s": 60}, T0)
        == 42.0
    )
    assert facts.asked[-1] == ("p99", "ws", "digits", 60.0)
    assert sig.evaluate(facts, "deployment.p99_latency_ms", "ws", {"deployment": "idle"}, T0) is None
    assert facts.asked[-1][3] == sig.DEFAULT_WINDOW_S
    assert sig.evaluate(facts, "deployment.error_rate", "ws", {"deployment": "digits"}, T0) == 0.05
    assert sig.evaluate(facts, "deployment.error_rate", "ws", {"deployment": "idle"}, T0) is None
    assert sig.evaluate(facts, "deployment.ready_replicas", "ws", {"deployment": "digits"}, T0) == 2.0
    assert sig.evaluate(facts, "jobs.failed", "ws", {"window_s": 600}, T0) == 3.0
    assert facts.asked[-1] == ("failed", T0 - timedelta(seconds=600), None)
    assert sig.evaluate(facts, "jobs.failed", "ws", {"job": "train"}, T0) == 1.0
    assert sig.evaluate(facts, "workspace.spend_per_day", "ws", {}, T0) == 12.5
    assert facts.asked[-1] == ("spend", T0 - timedelta(days=1))
    with pytest.raises(KeyError):
        sig.evaluate(facts, "nope", "ws", {}, T0)
