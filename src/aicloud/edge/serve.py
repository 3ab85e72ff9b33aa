"""``aicloud edge serve BUNDLE --key KEY``: serve a verified bundle offline, without a control plane.

The bundle is verified against the trusted public key (:func:`aicloud.artifacts.bundle.open_bundle`:
signature, then every member's digest) before anything of it is written or loaded; a refused bundle
is never served. Its ``model.onnx`` and ``config.json`` are written to a private folder (0700,
removed at exit) and served by the replica's app (:func:`aicloud.serving.app.build_app` with an
:class:`~aicloud.serving.runtime.ArtifactRuntime`): ``POST /predict`` with a deployment's request and
response shape, ``/v2/health/ready``, ``/v2/models/{name}`` and ``/v2/models/{name}/infer`` of the
Open Inference Protocol, ``/metrics``. The model's name is the bundle's model name.

With ``--token T`` every request but the health routes needs ``Authorization: Bearer T`` (the
replica's own check); without it the server answers anyone who reaches its address (bind it to
loopback, the default, or a network you trust). ONNX Runtime runs the model: torch is never imported.

``python -m aicloud.edge.serve`` is the node agent's child (:mod:`aicloud.edge.agent`): the same server
with the replica's batching options, its key read from a file, and ``--parent-fd``: the read end of
a pipe whose write end only the agent holds, so the child stops when the agent is gone (even after a
``kill -9``) instead of holding its port.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicloud.artifacts.bundle import VerifiedBundle, open_bundle
from aicloud.serving.app import Receive, ReplicaApp, ReplicaConfig, Scope, Send, build_app
from aicloud.serving.runtime import ArtifactRuntime


class OpenAccess:
    """The replica app without a token: each request is handed to it with the app's own random key,
    so the replica's authentication passes (the caller sends none)."""

    def __init__(self, app: ReplicaApp, key: str) -> None:
        self.app = app
        self._auth = (b"authorization", f"Bearer {key}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [h for h in scope.get("headers", []) if h[0].lower() != b"authorization"]
            scope = {**scope, "headers": [*headers, self._auth]}
        await self.app(scope, receive, send)


@dataclass
class EdgeServer:
    """A verified bundle, extracted and loaded: ``asgi`` is what uvicorn serves."""

    bundle: VerifiedBundle
    app: ReplicaApp
    asgi: Any
    folder: Path

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def load_edge(
    bundle_path: str | Path,
    public_key: bytes,
    token: str | None = None,
    *,
    threads: int | None = None,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
) -> EdgeServer:
    """Verify ``bundle_path`` against ``public_key`` and load its model (ready to serve), on ``threads``
    intra-op threads (default: the machine's CPUs) that do not spin while idle, as a replica's do.

    Raises:
        BundleError: the bundle failed a check (nothing was written or loaded).
    """
    bundle = open_bundle(bundle_path, public_key)
    folder = Path(tempfile.mkdtemp(prefix="aicloud-edge-"))  # 0700
    try:
        bundle.extract(folder / "model")
        key = token or secrets.token_urlsafe(32)
        batching: dict[str, Any] = {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms}
        config = ReplicaConfig.from_spec(batching, name=bundle.name, key=key, version=bundle.version)
        runtime = ArtifactRuntime(folder / "model", threads=threads or os.cpu_count() or 1)
        app = build_app(config, runtime=runtime, start=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    asgi: Any = app if token else OpenAccess(app, key)
    return EdgeServer(bundle=bundle, app=app, asgi=asgi, folder=folder)


def run(server: EdgeServer, host: str, port: int) -> None:
    """Serve until interrupted (SIGINT/SIGTERM: uvicorn's graceful shutdown)."""
    import uvicorn

    config = uvicorn.Config(
        server.asgi,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        server.close()


def _stop_with_parent(fd: int) -> None:
    """Block on the agent's pipe; its end (the agent exited, however) stops this server gracefully."""

    def watch() -> None:
        try:
            while os.read(fd, 64):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Timer(20, os._exit, (1,)).start()  # a graceful stop that hangs still ends

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """The agent's child: ``python -m aicloud.edge.serve BUNDLE --key-file K --token-file F --port P``."""
    from aicloud.artifacts.bundle import parse_public_key

    p = argparse.ArgumentParser(prog="python -m aicloud.edge.serve", description=main.__doc__)
    p.add_argument("bundle", type=Path)
    p.add_argument("--key-file", type=Path, required=True, help="the trusted public key")
    p.add_argument("--token-file", type=Path, required=True, help="the key every request must carry")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-batch-size", type=int, default=None)
    p.add_argument("--max-wait-ms", type=float, default=None)
    p.add_argument("--parent-fd", type=int, default=None, help="stop when this pipe closes")
    args = p.parse_args(argv)
    if args.parent_fd is not None:
        _stop_with_parent(args.parent_fd)
    token = args.token_file.read_text().strip()
    if not token:
        raise SystemExit(f"{args.token_file} is empty")
    server = load_edge(
        args.bundle,
        parse_public_key(args.key_file.read_text()),
        token,
        threads=args.threads,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
    )
    print(f"serving {server.bundle.name}:{server.bundle.version} on {args.host}:{args.port}", flush=True)
    run(server, args.host, args.port)


if __name__ == "__main__":
    main()
