"""The benchmark's replica processes, found through /proc: their pids and environment, the ready
replica's address and key (the direct rows), and cleanup after the control plane stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from aicloud import Client


def _proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def replica_pids(server_url: str, deployment: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """Replica processes of this benchmark's control plane (``AICLOUD_URL == server_url``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"aicloud.serving.replica" not in cmdline or b"supervise" in cmdline:
                continue
            env = _proc_env(int(entry.name))
        except OSError:
            continue
        if env.get("AICLOUD_URL") != server_url:
            continue
        if deployment is not None and env.get("AICLOUD_DEPLOYMENT_NAME") != deployment:
            continue
        yield int(entry.name), env


def replica_endpoint(server_url: str, deployment: str, timeout: float = 30) -> tuple[str, str]:
    """``(http://127.0.0.1:<port>, key)`` of the ready replica of ``deployment``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, env in replica_pids(server_url, deployment):
            base = f"http://127.0.0.1:{env['AICLOUD_REPLICA_PORT']}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    return base, env["AICLOUD_REPLICA_KEY"]
        time.sleep(0.2)
    raise RuntimeError(f"no ready replica process found for {deployment}")


def kill_stray_replicas(server_url: str) -> None:
    """Replicas left behind by this benchmark's server (after it stopped): SIGTERM, then SIGKILL."""
    pids = [pid for pid, _ in replica_pids(server_url)]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def delete_deployment(client: Client, server_url: str, name: str) -> None:
    with contextlib.suppress(Exception):
        client.deployments.get(name).delete()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(True for _ in replica_pids(server_url, name)):
        time.sleep(0.2)
