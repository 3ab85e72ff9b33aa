"""client.alerts and `aicloud alerts` against a real server: create, list, get, events, delete,
and the typed errors (422 naming the field, 404)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from aicloud import Client
from aicloud.errors import NotFoundError, ValidationError
from aicloud.testing.server import ServerProcess


def _cli(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(srv.home), AICLOUD_URL=srv.url, COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "aicloud", "alerts", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_sdk_rules_and_errors(client: Client, unique: Callable[[str], str]) -> None:
    name = unique("sdk-alert")
    rule = client.alerts.create(name, signal="jobs.failed", op=">", threshold=3, window="10m", for_="1m")
    assert (rule.name, rule.for_s, rule.params, rule.state) == (name, 60.0, {"window_s": 600.0}, "inactive")
    assert client.alerts.get(name).signal == "jobs.failed"
    assert name in [r.name for r in client.alerts.list()]
    assert client.alerts.events(name) == []
    with pytest.raises(ValidationError) as bad:
        client.alerts.create(
            unique("x"), signal="deployment.error_rate", deployment="nope", op=">", threshold=0.1
        )
    assert "deployment" in str(bad.value)
    client.alerts.delete(name)
    with pytest.raises(NotFoundError):
        client.alerts.get(name)


def test_cli_create_list_events_delete(server: ServerProcess, unique: Callable[[str], str]) -> None:
    name = unique("cli-alert")
    made = _cli(
        server, "create", name, "--signal", "workspace.spend_per_day", "--op", ">", "--threshold", "100"
    )
    assert name in made.stdout and "inactive" in made.stdout
    listed = json.loads(_cli(server, "list", "-o", "json").stdout)
    assert name in [r["name"] for r in listed]
    assert "alert events" in _cli(server, "events", "--name", name).stdout
    assert name in _cli(server, "delete", name).stdout
    assert name not in [r["name"] for r in json.loads(_cli(server, "list", "-o", "json").stdout)]
