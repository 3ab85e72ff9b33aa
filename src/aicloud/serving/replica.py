"""The replica entry point: ``python -m aicloud.serving.replica`` (see docs/serving.md).

Environment (set by the deployment controller):

=================================  ===================================================================
``AICLOUD_REPLICA_PORT``           port to bind on 127.0.0.1 (required)
``AICLOUD_REPLICA_KEY``            bearer every non-health request must carry (required)
``AICLOUD_REPLICA_ID``             for logs
``AICLOUD_DEPLOYMENT_NAME``        the OIP model name (``/v2/models/<name>``)
``AICLOUD_DEPLOYMENT_SPEC``        JSON: the spec plus ``model_version`` {files, ...}, ``service``
                                   {code, entrypoint}, or both (the service's ``self.model``);
                                   batching fields: ``max_batch_size``,
                                   ``max_wait_ms``, ``max_queue``, ``timeout_s``, ``cache_bytes``,
                                   ``max_body_bytes``; ``runtime`` (:mod:`aicloud.serving.runtimes`),
                                   ``cpus`` and ``batch_workers`` (its intra-op threads)
``AICLOUD_URL``, ``AICLOUD_TOKEN``  the control plane, to download blobs
``AICLOUD_REPLICA_DRAIN_S``        longest SIGTERM drain before exiting anyway (default 30)
=================================  ===================================================================

Test and development only (skip downloading):

* ``AICLOUD_REPLICA_MODEL_DIR=<folder>``: serve this model folder;
* ``AICLOUD_REPLICA_SERVICE=<path/file.py:ClassName>``: serve this Service class (with
  ``AICLOUD_REPLICA_MODEL_DIR`` too, that folder is its ``self.model``).

The port also speaks the gateway channel (:mod:`aicloud.serving.channel`): a connection that opens
with its upgrade request carries many requests as frames; any other connection is HTTP/1.1.

Start-up errors: when what it serves cannot be fetched, imported or loaded (an import error, a bad
entrypoint, ``setup()`` raised, a model that does not load) the replica prints the traceback and one
``could not start`` line and exits 1: the deployment controller fails the deployment at once, with
those lines as its message. When the control plane did not answer a download it exits
:data:`TRANSIENT_EXIT` (75, ``EX_TEMPFAIL``) instead, and the controller tries again.

Draining: the first SIGTERM (or SIGINT) turns ``/v2/health/ready`` and new requests to 503, waits
until the requests in flight are answered (at most ``AICLOUD_REPLICA_DRAIN_S``), then uvicorn shuts
down and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from aicloud.errors import DataCorruptedError, UnavailableError, ValidationError

if TYPE_CHECKING:  # imported in make_app, while the artifacts download (see there)
    from aicloud.client import Client
    from aicloud.serving.app import ReplicaApp
    from aicloud.serving.service import Service


#: The exit code of a start-up that may work when tried again (the control plane did not answer);
#: :data:`aicloud.controllers.replicas.TRANSIENT_EXIT` is the same number.
TRANSIENT_EXIT = 75
#: The exit code of a start-up error that would happen again (the replica's own error).
STARTUP_ERROR_EXIT = 1
#: The log line saying which runtime serves the model and why (``runtime: onnxruntime, auto: ...``).
RUNTIME_LINE = "runtime: "


def log(message: str) -> None:
    print(f"[aicloud replica] {message}", flush=True)


def _env_json(env: Mapping[str, str], name: str) -> dict[str, Any]:
    text = env.get(name)
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValidationError.field(name, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationError.field(name, "must be a JSON object")
    return doc


def _safe_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise ValidationError.field("model_version.files", f"unsafe file name {name!r}")
    return name


def download_blob(client: Client, digest: str, dest: Path) -> int:
    """Download blob ``digest`` into ``dest`` (atomically), checking its sha256."""
    expected = digest.split(":", 1)[1] if ":" in digest else digest
    tmp = dest.with_name(dest.name + ".part")
    size, sha = client.blobs.fetch(digest, tmp)
    if sha != expected.lower():
        tmp.unlink(missing_ok=True)
        raise DataCorruptedError(f"blob {digest}: downloaded bytes hash to sha256:{sha}")
    os.replace(tmp, dest)
    return size


def _client() -> Client:
    """The control plane from ``AICLOUD_URL``/``AICLOUD_TOKEN``; downloads may take 300 s."""
    from aicloud.client import Client

    return Client(timeout=300)


def fetch_model(spec: dict[str, Any], workdir: Path) -> Path:
    mv = spec.get("model_version")
    if not isinstance(mv, dict) or not isinstance(mv.get("files"), dict) or not mv["files"]:
        raise ValidationError.field("AICLOUD_DEPLOYMENT_SPEC", "model_version.files is missing")
    folder = workdir / "model"
    folder.mkdir(parents=True, exist_ok=True)
    client = _client()
    try:
        for filename, digest in mv["files"].items():
            size = download_blob(client, str(digest), folder / _safe_name(str(filename)))
            log(f"downloaded {filename} ({size} bytes)")
    finally:
        client.close()
    return folder


def fetch_service_code(spec: dict[str, Any], workdir: Path) -> tuple[Path, str]:
    svc = spec.get("service")
    if not isinstance(svc, dict) or not svc.get("code") or not svc.get("entrypoint"):
        raise ValidationError.field("AICLOUD_DEPLOYMENT_SPEC", "service needs code (a digest) and entrypoint")
    from aicloud.artifacts.archive import extract_archive

    archive = workdir / "code.tar.gz"
    client = _client()
    try:
        download_blob(client, str(svc["code"]), archive)
    finally:
        client.close()
    code = workdir / "code"
    extract_archive(archive, code)
    return code, str(svc["entrypoint"])


def load_service_class(code_dir: Path, entrypoint: str) -> type[Service]:
    """Import ``file.py:ClassName`` from ``code_dir`` (which joins ``sys.path`` for its own imports)."""
    file_part, _, class_name = entrypoint.rpartition(":")
    if not file_part or not class_name or not file_part.endswith(".py"):
        raise ValidationError.field("service.entrypoint", f"expected 'file.py:ClassName', got {entrypoint!r}")
    path = (code_dir / file_part).resolve()
    if not path.is_relative_to(code_dir.resolve()) or not path.is_file():
        raise ValidationError.field("service.entrypoint", f"{file_part!r} is not a file of the service code")
    from aicloud.serving.service import Service

    sys.path.insert(0, str(code_dir.resolve()))
    module_name = path.stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ValidationError.field(
            "service.entrypoint", f"{class_name!r} in {file_part} is not a subclass of aicloud.Service"
        )
    return cls


def _fetch(env: Mapping[str, str], spec: dict[str, Any], workdir: Path) -> tuple[str, Any]:
    """What the replica serves: ``("model", folder)`` or ``("service", (code folder, entrypoint))``,
    downloaded from the control plane unless a test-only variable names it."""
    if env.get("AICLOUD_REPLICA_SERVICE"):
        file_part, _, cls_name = env["AICLOUD_REPLICA_SERVICE"].rpartition(":")
        path = Path(file_part)
        model_dir = Path(env["AICLOUD_REPLICA_MODEL_DIR"]) if env.get("AICLOUD_REPLICA_MODEL_DIR") else None
        return "service", (path.parent, f"{path.name}:{cls_name}", model_dir)
    if env.get("AICLOUD_REPLICA_MODEL_DIR"):
        return "model", Path(env["AICLOUD_REPLICA_MODEL_DIR"])
    if isinstance(spec.get("service"), dict):
        code, entrypoint = fetch_service_code(spec, workdir)
        with_model = isinstance(spec.get("model_version"), dict)  # the service's self.model
        return "service", (code, entrypoint, fetch_model(spec, workdir) if with_model else None)
    return "model", fetch_model(spec, workdir)


def _in_background(fn: Any, *args: Any) -> Future[Any]:
    pool = ThreadPoolExecutor(1, thread_name_prefix="aicloud-fetch")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def make_app(environ: Mapping[str, str] | None = None, workdir: Path | None = None) -> ReplicaApp:
    """Build (not start) the replica app from the environment, downloading what it serves.

    The download runs in a thread while this one imports the serving stack (FastAPI, the model
    runtime): a cold start waits for the slower of the two, not for both.
    """
    env = os.environ if environ is None else environ
    workdir = workdir or Path.cwd()
    key = env.get("AICLOUD_REPLICA_KEY", "")
    if not key:
        raise ValidationError.field("AICLOUD_REPLICA_KEY", "is not set; the controller passes a random key")
    spec = _env_json(env, "AICLOUD_DEPLOYMENT_SPEC")
    fetched = _in_background(_fetch, env, spec, workdir)
    from aicloud.serving.app import ReplicaConfig, build_app
    from aicloud.serving.text_runtime import model_runtime  # a text model, or ArtifactRuntime

    name = env.get("AICLOUD_DEPLOYMENT_NAME") or "model"
    mv = spec.get("model_version")
    mv = mv if isinstance(mv, dict) else {}
    config = ReplicaConfig.from_spec(
        spec,
        name=name,
        key=key,
        replica_id=env.get("AICLOUD_REPLICA_ID", ""),
        version=str(mv.get("version", "1")),
    )
    kind, what = fetched.result()
    runtime = spec.get("runtime")
    threads = max(1, int(spec.get("cpus") or 1) // int(spec.get("batch_workers") or 1))
    batch = int(spec.get("max_batch_size") or 32)
    if kind == "service":
        code, entrypoint, model_dir = what
        from aicloud.serving.runtimes import ServiceModel

        model = ServiceModel(model_dir, runtime, threads=threads, batch=batch) if model_dir else None
        return build_app(config, service=load_service_class(code, entrypoint), model=model)
    from aicloud.serving.generation import generation_service

    generator = generation_service(what)  # a text-generation version (zoo/tiny-lm): OpenAI's chat routes
    if generator is not None:
        return build_app(config, service=generator)
    return build_app(config, runtime=model_runtime(what, runtime, threads=threads, batch=batch))


def serve(app: ReplicaApp, port: int, drain_s: float = 30.0) -> None:
    import uvicorn

    from aicloud.serving.channel import SniffingProtocol

    class DrainingServer(uvicorn.Server):
        drain_started: float | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.drain_started is None:
                self.drain_started = time.monotonic()
                app.begin_drain()
                log(f"signal {sig}: draining {app.state.inflight} request(s) in flight")
            else:
                self.should_exit = self.force_exit = True

        async def on_tick(self, counter: int) -> bool:
            if self.drain_started is not None and (
                app.state.inflight == 0 or time.monotonic() - self.drain_started > drain_s
            ):
                self.should_exit = True
            return await super().on_tick(counter)

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=SniffingProtocol,  # httptools, plus the gateway channel on the same port
        lifespan="on",
        access_log=False,
        # Only the gateway (or a caller holding the replica key) talks to a replica, on loopback:
        # no X-Forwarded-* rewriting, Server or Date header per response.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level="warning",
        timeout_graceful_shutdown=int(drain_s),
        timeout_keep_alive=75,
    )
    DrainingServer(config).run()


def process_age() -> float | None:
    """Seconds since this process started (None if unknown): interpreter start-up and imports
    included, which ``time.monotonic()`` deltas taken in ``main`` miss."""
    import psutil

    try:
        boot = psutil.boot_time()
        created = psutil.Process().create_time()
    except psutil.Error:
        return None
    if hasattr(time, "CLOCK_BOOTTIME"):  # Linux
        # create_time() is the boot time (whole seconds) plus the start since boot; against the
        # clock that counts since boot the age is exact to the tick, the rounded boot time cancelled
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - (created - boot))
    return max(0.0, time.time() - created)


def is_transient(exc: BaseException) -> bool:
    """Whether a start-up error may pass when tried again: the control plane did not answer."""
    import httpx

    return isinstance(exc, UnavailableError | ConnectionError | TimeoutError | httpx.TransportError)


def _startup_failed(exc: BaseException) -> int:
    """Print the traceback and one line saying what failed; the exit code says whether to retry."""
    traceback.print_exc()
    sys.stderr.flush()
    text = str(exc).strip()
    summary = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    if is_transient(exc):
        log(f"could not start, maybe for now (it is tried again): {summary}")
        return TRANSIENT_EXIT
    log(f"could not start: {summary}")
    return STARTUP_ERROR_EXIT


def main() -> int:
    port_text = os.environ.get("AICLOUD_REPLICA_PORT", "")
    if not (port_text.isascii() and port_text.isdigit()):
        print("[aicloud replica] AICLOUD_REPLICA_PORT must be a port number", file=sys.stderr)
        return 2
    age = process_age()
    started = time.monotonic()
    try:
        app = make_app()
        built = time.monotonic()
        app.start()
    except Exception as exc:
        return _startup_failed(exc)
    ready = time.monotonic()
    phases = f"fetch and build {built - started:.2f}s, load and warm-up {ready - built:.2f}s"
    if age is not None:
        phases = f"start-up and imports {age:.2f}s, {phases}"
    engine = getattr(app.runtime, "engine", "") if app.runtime is not None else "service"
    served = app.runtime if app.runtime is not None else app.model  # a Service's self.model
    if getattr(served, "choice", ""):  # read by the control plane (ReplicaOut.runtime)
        log(f"{RUNTIME_LINE}{served.choice}")  # type: ignore[union-attr]
    log(f"{app.config.name}: ready ({engine}; {phases}), listening on 127.0.0.1:{port_text}")
    drain_s = float(os.environ.get("AICLOUD_REPLICA_DRAIN_S") or 30)
    try:
        serve(app, int(port_text), drain_s)
    except SystemExit as exc:  # uvicorn could not bind the port (taken since): a new replica may
        if exc.code in (0, None):
            raise
        log(f"could not listen on 127.0.0.1:{port_text} (it is tried again)")
        return TRANSIENT_EXIT
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
