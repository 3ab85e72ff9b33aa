"""Alert rules and notifications on SQLite and PostgreSQL (migration 0013): a state change and its
notifications commit together, pending ones come back after a restart, sent ones never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aicloud.errors import ConflictError, NotFoundError
from aicloud.store import MetadataStore, open_store

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
)


def _rule(store: MetadataStore, ws: str, name: str = "slow") -> None:
    store.alerts.create_rule(
        workspace_id=ws,
        name=name,
        signal="deployment.p99_latency_ms",
        params={"deployment": "digits", "window_s": 300.0},
        op=">",
        threshold=50,
        for_s=120,
        severity="page",
        notify=["webhook:http://127.0.0.1:9/hook?token=s3cret"],
    )


def test_rules_are_per_workspace_and_unique_by_name(store: MetadataStore) -> None:
    a = store.workspaces.create("alerts-a")
    b = store.workspaces.create("alerts-b")
    _rule(store, a.id)
    with pytest.raises(ConflictError):
        _rule(store, a.id)
    _rule(store, b.id)
    rule = store.alerts.get_rule(a.id, "slow")
    assert (rule.state, rule.threshold, rule.for_s, rule.params["deployment"]) == (
        "inactive",
        50.0,
        120.0,
        "digits",
    )
    assert [r.name for r in store.alerts.list_rules(a.id)] == ["slow"]
    assert len(store.alerts.list_rules()) == 2
    store.alerts.delete_rule(b.id, "slow")
    with pytest.raises(NotFoundError):
        store.alerts.get_rule(b.id, "slow")
    with pytest.raises(NotFoundError):
        store.alerts.delete_rule(b.id, "slow")
    assert store.alerts.get_rule(a.id, "slow").name == "slow"


def test_a_firing_rule_and_its_unsent_notification_survive_a_reopen(store_url: str) -> None:
    store = open_store(store_url)
    ws = store.workspaces.create("alerts-restart")
    _rule(store, ws.id)
    rule = store.alerts.get_rule(ws.id, "slow")
    now = datetime.now(UTC)
    moved = store.alerts.transition(
        rule.id,
        state="firing",
        state_since=now,
        fired_at=now,
        value=80.0,
        evaluated_at=now,
        notifications=[
            ("firing", "webhook:http://a/x", {"status": "firing"}),
            ("firing", "webhook:http://b/y", {}),
        ],
    )
    assert moved is not None and moved.state == "firing" and moved.last_value == 80.0
    due = store.alerts.due_notifications(now + timedelta(seconds=1))
    assert sorted(n.target for n in due) == ["webhook:http://a/x", "webhook:http://b/y"]
    sent = next(n for n in due if n.target.endswith("/x"))
    store.alerts.mark_notification(sent.id, delivery="sent", attempts=1)
    retry = next(n for n in due if n.target.endswith("/y"))
    later = now + timedelta(seconds=60)
    store.alerts.mark_notification(
        retry.id, delivery="pending", attempts=1, next_attempt_at=later, error="HTTP 500"
    )
    store.close()

    again = open_store(store_url)
    try:
        assert again.alerts.get_rule(ws.id, "slow").state == "firing"
        assert again.alerts.due_notifications(now + timedelta(seconds=1)) == []
        (pending,) = again.alerts.due_notifications(later)
        assert (pending.id, pending.attempts, pending.last_error) == (retry.id, 1, "HTTP 500")
        events = again.alerts.notifications(ws.id, rule_name="slow")
        assert {e.delivery for e in events} == {"sent", "pending"}
        assert next(e for e in events if e.delivery == "sent").sent_at is not None
        again.alerts.delete_rule(ws.id, "slow")
        assert again.alerts.notifications(ws.id) == []
        assert (
            again.alerts.transition(
                rule.id,
                state="inactive",
                state_since=now,
                fired_at=None,
                value=None,
                evaluated_at=now,
                notifications=[],
            )
            is None
        )
    finally:
        again.close()
