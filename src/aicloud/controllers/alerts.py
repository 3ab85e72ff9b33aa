"""The alert controller (docs/alerts.md): every ``interval`` seconds it reads each rule's signal,
moves the rule's state (``alert_notify.step``) and, in the same transaction, records the
notifications that the change sends. A separate sender thread POSTs the recorded notifications
with a short timeout, retrying with exponential backoff up to ``MAX_ATTEMPTS`` times, so a slow
webhook never holds up the evaluator. A notification is recorded before it is sent and marked sent
after: a restarted control plane retries only the unsent ones and keeps a firing rule firing.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aicloud.controllers import alert_notify as an
from aicloud.controllers import alert_signals
from aicloud.controllers.loop import ReconcileLoop
from aicloud.entities.alerts import AlertNotification, AlertRule
from aicloud.store import MetadataStore

log = logging.getLogger("aicloud.alerts")

#: Seconds a webhook has to answer.
SEND_TIMEOUT_S = 5.0
WEBHOOK = "webhook:"


def post_json(url: str, body: dict[str, Any], timeout: float) -> None:
    """POST ``body``; raises on anything but a 2xx answer."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # http(s) only: checked on create
        if not 200 <= resp.status < 300:
            raise OSError(f"HTTP {resp.status}")


def _error_text(exc: BaseException) -> str:
    """What went wrong, without the URL (it may hold a token)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable: {type(exc.reason).__name__}"
    return type(exc).__name__ if not str(exc).startswith("HTTP ") else str(exc)


class AlertSender:
    """Delivers due notifications from the store, in its own thread."""

    def __init__(
        self,
        store: MetadataStore,
        *,
        poll_s: float = 1.0,
        timeout_s: float = SEND_TIMEOUT_S,
        max_attempts: int = an.MAX_ATTEMPTS,
        backoff: Callable[[int], float] = an.backoff_s,
        post: Callable[[str, dict[str, Any], float], None] = post_json,
    ) -> None:
        self.store, self.poll_s, self.timeout_s = store, poll_s, timeout_s
        self.max_attempts, self.backoff, self.post = max_attempts, backoff, post
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def deliver(self, n: AlertNotification, now: datetime) -> None:
        attempts = n.attempts + 1
        url = n.target.removeprefix(WEBHOOK)
        try:
            self.post(url, n.payload, self.timeout_s)
        except Exception as exc:
            error = _error_text(exc)
            if attempts >= self.max_attempts:
                log.warning(
                    "alert %s: %s gave up after %d tries (%s)",
                    n.rule_name,
                    an.redact_url(url),
                    attempts,
                    error,
                )
                self.store.alerts.mark_notification(n.id, delivery="failed", attempts=attempts, error=error)
            else:
                retry_at = now + timedelta(seconds=self.backoff(attempts))
                self.store.alerts.mark_notification(
                    n.id, delivery="pending", attempts=attempts, next_attempt_at=retry_at, error=error
                )
            return
        self.store.alerts.mark_notification(n.id, delivery="sent", attempts=attempts)

    def send_due(self) -> int:
        """One round: every due notification gets one try. Returns how many were tried."""
        now = datetime.now(UTC)
        due = self.store.alerts.due_notifications(now)
        for n in due:
            self.deliver(n, now)
        return len(due)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_due()
            except Exception:
                log.exception("alert sender round failed; retrying")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="aicloud-alert-sender", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class AlertController(ReconcileLoop):
    """Evaluates every workspace's rules against ``facts`` and records their state changes."""

    loop_name = "alert controller"

    def __init__(
        self,
        store: MetadataStore,
        facts: alert_signals.Facts,
        interval: float,
        *,
        external_url: str = "",
        sender: AlertSender | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(interval)
        self.store, self.facts, self.external_url, self.clock = store, facts, external_url, clock
        self.sender = sender if sender is not None else AlertSender(store)

    def evaluate(self, rule: AlertRule, now: datetime) -> None:
        try:
            value = alert_signals.evaluate(self.facts, rule.signal, rule.workspace_id, rule.params, now)
        except Exception:
            self._log.exception("alert %s: signal %s failed; counted as no data", rule.name, rule.signal)
            value = None
        move = an.step(rule, value, now)
        notes: list[tuple[str, str, dict[str, Any]]] = []
        if move.event is not None:
            starts = move.fired_at if move.event == "firing" else rule.fired_at
            ends = now if move.event == "resolved" else None
            for target in rule.notify:
                body = an.payload(
                    rule,
                    move.event,
                    value=value,
                    starts_at=starts,
                    ends_at=ends,
                    receiver=target.split(":", 1)[0],
                    external_url=self.external_url,
                )
                notes.append((move.event, target, body))
            self._log.info("alert %s (%s): %s, value %s", rule.name, rule.workspace_id, move.event, value)
        self.store.alerts.transition(
            rule.id,
            state=move.state,
            state_since=move.state_since,
            fired_at=move.fired_at,
            value=value,
            evaluated_at=now,
            notifications=notes,
        )
        if notes:
            self.sender.wake()

    def reconcile_once(self) -> None:
        with self._pass_lock:
            rules = self.store.alerts.list_rules()
            self.idle = not rules
            now = self.clock()
            for rule in rules:
                self.evaluate(rule, now)

    def start(self) -> None:
        super().start()
        self.sender.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_loop(timeout)
        self.sender.stop(timeout)
