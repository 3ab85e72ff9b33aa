"""Run the control plane in the foreground (``aicloud server``)."""

from __future__ import annotations

import logging

import uvicorn

from aicloud.client.extras import MissingExtraError
from aicloud.config import Settings
from aicloud.errors import AicloudError
from aicloud.executors import SandboxUnavailable, workload_sandbox
from aicloud.server.app import create_app, open_state
from aicloud.server.home import prepare_home
from aicloud.wire.http1 import OneWriteProtocol


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
    uvicorn.run(
        create_app(settings, state, sandbox=sandbox),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        http=OneWriteProtocol,  # httptools, each response in one write
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    run_server()
