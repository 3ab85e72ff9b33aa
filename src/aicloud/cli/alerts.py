"""``aicloud alerts create|list|events|delete``: alert rules and their notifications (docs/alerts.md)."""

from __future__ import annotations

from typing import Any

import typer

from aicloud.cli.common import Output, OutputOpt, client, console, emit, table

alerts_app = typer.Typer(help="Alert rules that notify webhooks (docs/alerts.md).", no_args_is_help=True)


def _when(value: Any) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def render_rules(rules: list[Any]) -> None:
    rows = [
        [
            r.name,
            r.signal,
            r.params.get("deployment") or r.params.get("job") or "",
            f"{r.op} {r.threshold:g}",
            f"{r.for_s:g}s",
            r.severity,
            r.state,
            "" if r.last_value is None else f"{r.last_value:.4g}",
            _when(r.state_since),
        ]
        for r in rules
    ]
    cols = ["name", "signal", "target", "condition", "for", "severity", "state", "value", "since"]
    console.print(table("alert rules", cols, rows))


def render_events(events: list[Any]) -> None:
    rows = [
        [_when(e.created_at), e.rule, e.status, e.target, e.delivery, e.attempts, e.last_error or ""]
        for e in events
    ]
    cols = ["at", "rule", "status", "target", "delivery", "tries", "last error"]
    console.print(table("alert events", cols, rows))


@alerts_app.command("create")
def create(
    name: str = typer.Argument(..., help="the rule's name"),
    signal: str = typer.Option(..., "--signal", help="e.g. deployment.p99_latency_ms (docs/alerts.md)"),
    op: str = typer.Option(..., "--op", help="> >= < <= == !="),
    threshold: float = typer.Option(..., "--threshold", help="the value the signal is compared with"),
    deployment: str | None = typer.Option(None, "--deployment", help="for deployment.* signals"),
    job: str | None = typer.Option(None, "--job", help="jobs.failed: only jobs of this name"),
    window: str | None = typer.Option(None, "--window", help="the signal's window, e.g. 5m"),
    for_: str = typer.Option("0s", "--for", help="how long the condition must hold, e.g. 2m"),
    severity: str = typer.Option("warning", "--severity", help="a label for the receiver, e.g. page"),
    notify: list[str] | None = typer.Option(None, "--notify", help="webhook:https://... (repeat for more)"),
    output: Output = OutputOpt,
) -> None:
    """Create a rule: it fires when SIGNAL OP THRESHOLD has held --for, and resolves after."""
    rule = client().alerts.create(
        name,
        signal=signal,
        op=op,
        threshold=threshold,
        deployment=deployment,
        job=job,
        window=window,
        for_=for_,
        severity=severity,
        notify=notify or [],
    )
    emit([rule], output, render_rules)


@alerts_app.command("list")
def list_rules(output: Output = OutputOpt) -> None:
    """The workspace's rules with their state (inactive, pending, firing) and last value."""
    emit(client().alerts.list(), output, render_rules)


@alerts_app.command("events")
def events(
    name: str | None = typer.Option(None, "--name", help="only this rule's events"),
    limit: int = typer.Option(100, "--limit", help="at most this many events"),
    output: Output = OutputOpt,
) -> None:
    """Notifications sent (or being retried, or failed), newest first."""
    emit(client().alerts.events(name, limit=limit), output, render_events)


@alerts_app.command("delete")
def delete(name: str = typer.Argument(..., help="the rule's name")) -> None:
    """Remove a rule and its events."""
    client().alerts.delete(name)
    console.print(f"deleted alert rule {name}")
