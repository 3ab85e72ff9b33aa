"""Run the control plane in the foreground (``aicloud server``)."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from types import FrameType

import uvicorn

from aicloud.client.extras import MissingExtraError
from aicloud.config import Settings
from aicloud.errors import AicloudError
from aicloud.executors import SandboxUnavailable, workload_sandbox
from aicloud.server.app import create_app, open_state
from aicloud.server.home import prepare_home
from aicloud.server.state import AppState
from aicloud.wire.http1 import OneWriteProtocol


class _Server(uvicorn.Server):
    """uvicorn's server, which also answers the edge nodes' open long-polls at once when told to
    stop, so they do not hold the graceful shutdown for its whole timeout."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.deployments is not None:  # a thread: this signal handler may interrupt a lock holder
            threading.Thread(target=self.state.deployments.edge.changes.close, daemon=True).start()
        super().handle_exit(sig, frame)


def run_server(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    prepare_home(settings)  # 0700, its private files 0600 (logs what it tightens)
    try:
        sandbox = workload_sandbox(settings)
    except SandboxUnavailable as exc:
        raise SystemExit(f"aicloud: cannot start: {exc}") from None
    # The stores open here, not in the app's start-up, where uvicorn would print what went wrong
    # (no database, its driver not installed, a wrong master key) as a traceback.
    try:
        state = open_state(settings)
    except AicloudError as exc:
        raise SystemExit(f"aicloud: cannot start: {exc.message}") from None
    except MissingExtraError as exc:
        raise SystemExit(f"aicloud: cannot start: {exc}") from None
    config = uvicorn.Config(
        create_app(settings, state, sandbox=sandbox),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        http=OneWriteProtocol,  # httptools, each response in one write
        timeout_graceful_shutdown=10,
    )
    server = _Server(config, state)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn.run's STARTUP_FAILURE


if __name__ == "__main__":
    run_server()
