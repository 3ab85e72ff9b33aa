"""Commands that act on this machine: ``server``, ``up``, ``down``, ``status``, ``login``, ``admin migrate``.

This is the one CLI module allowed to import the server side (declared in the
import-linter contract): it runs the control plane in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import typer

from aicloud.cli.common import console, err_console
from aicloud.client import Client
from aicloud.client.extras import missing_packages, require_extra
from aicloud.config import Settings


def server(
    host: str | None = typer.Option(None, help="listen address (default 127.0.0.1, AICLOUD_HOST)"),
    port: int | None = typer.Option(None, help="listen port (default 8420, AICLOUD_PORT)"),
) -> None:
    """Run the control plane in the foreground."""
    _require_server("aicloud server")
    from aicloud.server.main import run_server

    settings = Settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    run_server(settings)


def _require_server(what: str) -> None:
    """A clean error without ``aicloud[server]``; a warning without ``aicloud[train]``, since jobs and
    replicas run with this interpreter."""
    require_extra("server", what)
    if missing := missing_packages("train"):
        err_console.print(
            f"[yellow]warning: jobs and serving replicas run with this Python, which lacks aicloud\\[train] "
            f"({', '.join(missing)}): pip install 'aicloud\\[server,train]'[/]"
        )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _read_pid(settings: Settings) -> int | None:
    try:
        pid = int(settings.pid_path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def up(
    host: str | None = typer.Option(None, help="listen address (default 127.0.0.1, AICLOUD_HOST)"),
    port: int | None = typer.Option(None, help="listen port (default 8420, AICLOUD_PORT)"),
    timeout: float = typer.Option(60.0, help="seconds to wait for the server to answer"),
) -> None:
    """Start the control plane in the background (no-op if one already answers).

    With --port or --host it listens there; point the CLI and SDK at it with AICLOUD_URL
    (printed on start), as the credentials file keeps the URL of the first start.
    """
    settings = Settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    url = f"http://{settings.host}:{settings.port}"
    if _healthy(url):
        console.print(f"aicloud is already running at {url}")
        return
    _require_server("aicloud up")
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_fd = os.open(settings.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(log_fd, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aicloud",
                "server",
                "--host",
                settings.host,
                "--port",
                str(settings.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    with os.fdopen(os.open(settings.pid_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            try:
                tail = settings.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            except OSError:
                tail = []
            err_console.print("\n".join(tail), markup=False, highlight=False)
            err_console.print(
                f"[red]the server exited with code {proc.returncode}; see {settings.log_path}[/]"
            )
            raise typer.Exit(1)
        if _healthy(url):
            console.print(f"aicloud is up at {url} (pid {proc.pid}, log {settings.log_path})")
            if host or port:
                console.print(f"the CLI and SDK reach it with: export AICLOUD_URL={url}")
            return
        time.sleep(0.2)
    err_console.print(f"[red]the server did not answer within {timeout:.0f}s; see {settings.log_path}[/]")
    raise typer.Exit(1)


def down(timeout: float = typer.Option(15.0, help="seconds to wait before SIGKILL")) -> None:
    """Stop the background control plane started by `aicloud up`."""
    settings = Settings()
    pid = _read_pid(settings)
    if pid is None:
        console.print("aicloud is not running (no live pid file)")
        settings.pid_path.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    settings.pid_path.unlink(missing_ok=True)
    console.print(f"stopped aicloud (pid {pid})")


def status() -> None:
    """Whether the control plane answers, and who you are to it."""
    settings = Settings()
    c = Client()
    if not _healthy(c.url):
        console.print(f"aicloud is not answering at {c.url}")
        raise typer.Exit(1)
    me = c.workspaces.whoami()
    console.print(
        f"aicloud at {c.url}: workspace {me.workspace.name}, token {me.token_name} ({me.role.value})"
    )
    pid = _read_pid(settings)
    if pid:
        console.print(f"background server pid {pid}, log {settings.log_path}")


def login(
    url: str = typer.Option(..., prompt=True, help="control-plane URL, e.g. http://host:8420"),
    token: str = typer.Option(..., prompt=True, hide_input=True, help="a bearer token"),
) -> None:
    """Check a URL and token, then save them to $AICLOUD_HOME/credentials (0600)."""
    c = Client(url=url, token=token)
    me = c.workspaces.whoami()
    settings = Settings()
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = settings.credentials_path
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url.rstrip("/"), "token": token, "workspace": me.workspace.name}, f, indent=2)
    os.replace(tmp, path)
    console.print(f"logged in to {url} as {me.token_name} ({me.role.value}) in workspace {me.workspace.name}")


def migrate() -> None:
    """Bring the metadata database to the current schema (runs at server start too)."""
    require_extra("server", "aicloud admin migrate")
    from aicloud.store.sql.migrate import upgrade

    settings = Settings()
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    console.print("the database schema is current")
