"""Run a real control-plane process for tests: a free port, its own home, real HTTP."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aicloud.wire.tcp import free_port


@functools.cache
def sandbox_unavailable() -> str | None:
    """Why the workload sandbox cannot run on this machine; None when it can."""
    from aicloud.executors.sandbox import Sandbox, SandboxUnavailable

    try:
        Sandbox.detect().probe()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


def default_isolation() -> str:
    """``sandbox`` where the sandbox runs; else ``none``, with a warning (the security tests skip)."""
    reason = sandbox_unavailable()
    if reason is None:
        return "sandbox"
    _say_unsandboxed(reason)
    return "none"


@functools.cache
def _say_unsandboxed(reason: str) -> None:
    sys.stderr.write(f"aicloud tests: servers run workloads unsandboxed (AICLOUD_ISOLATION=none): {reason}\n")


class ServerProcess:
    """``python -m aicloud server`` in a subprocess with ``AICLOUD_HOME=home``.

    ``start()`` waits for ``/healthz``; ``token`` is the bootstrap admin token the server
    wrote to ``home/credentials``. Output goes to ``home/server.out`` for post-mortems.
    """

    def __init__(self, home: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.home = Path(home)
        self.port = port or free_port()
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        creds = json.loads((self.home / "credentials").read_text())
        token: str = creds["token"]
        return token

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
        env.update(AICLOUD_HOME=str(self.home), AICLOUD_PORT=str(self.port), AICLOUD_HOST="127.0.0.1")
        env.update(AICLOUD_ISOLATION=default_isolation())
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.home / "server.out", "ab")  # noqa: SIM115 (kept open for the child's life)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aicloud", "server"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy in {timeout}s:\n{self.output()[-4000:]}")

    def output(self) -> str:
        try:
            return (self.home / "server.out").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no shutdown handlers run."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
