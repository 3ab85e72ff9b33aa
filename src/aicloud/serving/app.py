"""The replica's ASGI app: predict, the Open Inference Protocol, a Service's handlers, metrics.

    app = build_app(ReplicaConfig(name="digits", key="k"), runtime=ArtifactRuntime("model/"))
    app.start()        # load, setup(), warm up: /v2/health/ready turns 200

:class:`ReplicaApp` is a thin ASGI layer in front of a FastAPI app. For every request but the two health
routes it checks, in order: draining (503), ``Authorization: Bearer <key>`` (constant-time; 401), and
the body size (``Content-Length`` first, then while reading; 413). It reads the body once and hands
it to the routes (``scope["aicloud.body"]``), so ``/predict`` parses the raw bytes
(:func:`~aicloud.serving.runtime.parse_json`) and answers a plain ``Response``: no request model, no
copies. Errors have the aicloud shape (on the Open Inference Protocol's ``/v2`` routes the protocol's
``{"error": "<message>"}``) and never carry a stack trace.

The routes live by concept: the Open Inference Protocol in :mod:`aicloud.serving.oip_routes`, a
Service's handlers in :mod:`aicloud.serving.handlers`, the shared request/response helpers in
:mod:`aicloud.serving.asgi`; ``/predict`` and ``/metrics`` stay here.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from aicloud.errors import (
    AicloudError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthenticatedError,
    UnavailableError,
    code_for_status,
)
from aicloud.serving.asgi import (
    JSON,
    SEE_LOGS,
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    error_response,
    is_oip_path,
    request_body,
    send_error,
    submit,
)
from aicloud.serving.batcher import DynamicBatcher
from aicloud.serving.cache import ResponseCache, cache_key
from aicloud.serving.handlers import HandlerRoute, add_handler_route, validation_error
from aicloud.serving.metrics import ReplicaMetrics
from aicloud.serving.oip_routes import add_oip_routes
from aicloud.serving.openai_chat import GenerationRoutes, RawRoute, is_generator
from aicloud.serving.runtime import ModelRuntime, bad_input, parse_json
from aicloud.serving.service import HandlerInfo, Service, handlers_of

if TYPE_CHECKING:
    from aicloud.serving.runtimes import ServiceModel

__all__ = [
    "HEALTH",
    "JSON",
    "ClientGone",
    "Message",
    "Receive",
    "ReplicaApp",
    "ReplicaConfig",
    "ReplicaState",
    "Scope",
    "Send",
    "build_app",
    "error_response",
]

log = logging.getLogger("aicloud.serving")

HEALTH = frozenset({"/v2/health/live", "/v2/health/ready"})


@dataclass
class ReplicaConfig:
    """What one replica serves and how; :meth:`from_spec` reads the deployment spec's fields."""

    name: str = "model"
    key: str = ""
    version: str = "1"
    replica_id: str = ""
    max_batch_size: int = 8
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    timeout_s: float = 60.0
    cache_bytes: int = 0
    max_body_bytes: int = 64 * 1024 * 1024
    handler_threads: int = 4
    batch_workers: int = 1
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError(
                "ReplicaConfig.key is empty: set AICLOUD_REPLICA_KEY (every request must carry it)"
            )
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0 (0: no cache), got {self.cache_bytes}")

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **overrides: Any) -> ReplicaConfig:
        known = {
            "max_batch_size",
            "max_wait_ms",
            "max_queue",
            "timeout_s",
            "cache_bytes",
            "max_body_bytes",
            "batch_workers",
        }
        values = {k: spec[k] for k in known if spec.get(k) is not None}
        return cls(**{**values, **overrides})


@dataclass
class ReplicaState:
    ready: bool = False
    draining: bool = False
    inflight: int = 0
    message: str = "starting"
    batchers: list[DynamicBatcher] = field(default_factory=list)


class ReplicaApp:
    """The ASGI app of one replica (see the module docstring); :meth:`start` makes it ready."""

    def __init__(
        self,
        config: ReplicaConfig,
        runtime: ModelRuntime | None = None,
        service: Service | None = None,
        model: ServiceModel | None = None,
    ) -> None:
        if (runtime is None) == (service is None):
            raise TypeError("build_app needs exactly one of runtime=... (a model) or service=... (a Service)")
        if model is not None and service is None:
            raise TypeError("model=... is a Service's registered model (self.model): give service=... too")
        self.config = config
        self.runtime = runtime
        self.service = service
        self.model = model  # the Service's self.model, loaded by start()
        self.state = ReplicaState()
        self.metrics = ReplicaMetrics()
        self.cache = ResponseCache(config.cache_bytes) if config.cache_bytes > 0 else None
        self._key = f"Bearer {config.key}".encode()
        self._pool = ThreadPoolExecutor(config.handler_threads, thread_name_prefix="aicloud-handler")
        # a generation Service (aicloud.serving.generation) serves OpenAI's chat and completions routes
        self.generation = (
            GenerationRoutes(service, config.name, self.metrics.registry, config.max_queue)
            if is_generator(service)
            else None
        )
        self.handlers: dict[str, HandlerInfo] = (
            handlers_of(type(service), required=self.generation is None) if service is not None else {}
        )
        self._handler_batchers: dict[str, DynamicBatcher] = {}
        self._routes: dict[str, HandlerRoute | RawRoute] = {}  # "/<handler>": served on the raw ASGI layer
        self.batcher: DynamicBatcher | None = None
        if runtime is not None:
            self.batcher = self._new_batcher(
                runtime.run_batch, config.max_batch_size, config.max_wait_ms, "model"
            )
        self.api = self._build_api()

    def _new_batcher(
        self, run: Callable[[list[Any]], list[Any]], size: int, wait_ms: float, name: str
    ) -> DynamicBatcher:
        b = DynamicBatcher(
            run,
            max_batch_size=size,
            max_wait_ms=wait_ms,
            max_queue=self.config.max_queue,
            timeout_s=self.config.timeout_s,
            workers=self.config.batch_workers,
            on_batch=self.metrics.observe_batch,
            name=name,
        )
        self.state.batchers.append(b)
        return b

    # --- lifecycle
    def start(self) -> ReplicaApp:
        """Load the model (or run the service's ``setup()``), warm up, and turn ready."""
        if self.runtime is not None:
            self.state.message = "loading"
            self.runtime.load()
            self.state.message = "warming up"
            self.runtime.warmup()
        else:
            assert self.service is not None
            if self.model is not None:
                self.state.message = "loading"
                self.service.model = self.model.load()
            self.state.message = "setup"
            self.service.setup()
            if self.generation is not None:
                self._routes.update(self.generation.routes())
                self.generation.engine.start()
        self.state.ready = True
        self.state.message = "ready"
        return self

    def begin_drain(self) -> None:
        self.state.draining = True
        self.state.message = "draining"

    async def close(self) -> None:
        if self.generation is not None:
            self.generation.engine.close()
        for b in self.state.batchers:
            await b.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the ASGI layer
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH:
            await self.api(scope, receive, send)
            return
        route = self._route_label(scope["path"])
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        state = self.state
        state.inflight += 1
        self.metrics.inflight.inc()
        try:
            await self._guarded(scope, receive, send_status)
        finally:
            state.inflight -= 1
            self.metrics.inflight.dec()
            self.metrics.count(route, status, time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        oip = is_oip_path(scope["path"])
        if self.state.draining:
            retry = {"Retry-After": str(self.config.retry_after_s)}
            draining = UnavailableError("the replica is draining; retry on another")
            await send_error(send, draining, retry, oip=oip)
            return
        auth = b""
        length: int | None = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
            elif k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
        if not hmac.compare_digest(auth, self._key):
            await send_error(
                send,
                UnauthenticatedError("missing or wrong replica key (Authorization: Bearer)"),
                oip=oip,
            )
            return
        limit = self.config.max_body_bytes
        if length is not None and length > limit:
            await send_error(send, self._too_large(length), {"Connection": "close"}, oip=oip)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > limit:
                    await send_error(send, self._too_large(total), {"Connection": "close"}, oip=oip)
                    return
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        route = self._routes.get(scope["path"]) if scope["method"] == "POST" else None
        if route is not None:
            await route.serve(body, receive, send)
            return
        scope["aicloud.body"] = body
        # an unexpected error was answered 500 and logged by the app's handler; Starlette re-raises it
        with contextlib.suppress(Exception):
            await self.api(scope, replay, send)

    def _too_large(self, size: int) -> PayloadTooLargeError:
        limit = self.config.max_body_bytes
        return PayloadTooLargeError(
            f"the request body is larger than this replica's limit of {limit} bytes; send smaller batches",
            details={"limit": limit, "size": size},
        )

    def _route_label(self, path: str) -> str:
        if path in ("/predict", "/metrics", "/v2"):
            return path
        if path.startswith("/v2/models/"):
            return "/v2/models/infer" if path.endswith("/infer") else "/v2/models/metadata"
        name = path[1:]
        return path if name in self.handlers or path in self._routes else "other"

    # --- routes
    def _build_api(self) -> FastAPI:
        title = f"aicloud replica: {self.config.name}"

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield
            await self.close()

        api = FastAPI(title=title, docs_url=None, redoc_url=None, lifespan=lifespan)

        @api.exception_handler(AicloudError)
        async def _aicloud_error(request: Request, exc: AicloudError) -> Response:
            return error_response(exc, oip=is_oip_path(request.url.path))

        @api.exception_handler(RequestValidationError)
        async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
            err = validation_error(list(exc.errors()), skip=("body",))
            return error_response(err, oip=is_oip_path(request.url.path))

        @api.exception_handler(StarletteHTTPException)
        async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
            oip = is_oip_path(request.url.path)
            if exc.status_code == 404 and request.url.path.startswith("/v1/"):  # an OpenAI client
                from aicloud.serving.openai_embeddings import openai_error

                what = f"deployment {self.config.name!r} does not serve {request.url.path} (OpenAI API)"
                return openai_error(NotFoundError(what), param="model")
            if exc.status_code == 404:
                return error_response(NotFoundError(f"no route {request.url.path}", details=None), oip=oip)
            err = AicloudError(str(exc.detail))
            err.status_code = exc.status_code  # type: ignore[misc]
            err.code = code_for_status(exc.status_code)  # type: ignore[misc]
            return error_response(err, oip=oip)

        @api.exception_handler(Exception)
        async def _internal(request: Request, exc: Exception) -> Response:
            if isinstance(exc, ClientGone):
                return Response(status_code=499)
            log.exception("unhandled error on %s", request.url.path)
            internal = AicloudError(f"internal error ({type(exc).__name__}); {SEE_LOGS}")
            return error_response(internal, oip=is_oip_path(request.url.path))

        add_oip_routes(api, self)

        @api.get("/metrics")
        async def metrics() -> Response:
            return Response(self.metrics.render(), media_type=self.metrics.content_type)

        if self.runtime is not None:

            @api.post("/predict")
            async def predict(request: Request) -> Response:
                return await self._predict(request)

            from aicloud.serving.openai_embeddings import add_openai_embedding_routes

            add_openai_embedding_routes(api, self)  # a text-embedding model's OpenAI routes

        if self.generation is not None:
            generation = self.generation

            @api.get("/v1/models")
            async def openai_models() -> dict[str, Any]:
                return generation.models()

        for info in self.handlers.values():
            self._add_handler(api, info)
        return api

    async def _predict(self, request: Request) -> Response:
        runtime, batcher = self.runtime, self.batcher
        assert runtime is not None and batcher is not None
        doc = parse_json(request_body(request))
        if not isinstance(doc, dict) or "inputs" not in doc:
            raise bad_input("body", 'expected a JSON object {"inputs": [row, ...]}')
        prepared = runtime.prepare(doc["inputs"])
        key = None
        if self.cache is not None and prepared.matrix is not None:
            m = prepared.matrix
            key = cache_key(b"/predict", str(m.shape).encode(), m.tobytes())
            hit = self.cache.get(key)
            if hit is not None:
                self.metrics.cache_hits.inc()
                return Response(hit, media_type=JSON)
            self.metrics.cache_misses.inc()
        outputs = await submit(request.receive, batcher, prepared, prepared.rows)
        shape = getattr(runtime, "predict_payload", None)  # a text model: labels and probabilities
        payload = shape(outputs) if shape is not None else {"outputs": outputs}
        body = json.dumps(payload, separators=(",", ":")).encode()
        if key is not None and self.cache is not None:
            self.cache.put(key, body)
        return Response(body, media_type=JSON)

    def _add_handler(self, api: FastAPI, info: HandlerInfo) -> None:
        """Route one Service handler (:mod:`aicloud.serving.handlers`), with its batcher if ``batch``."""
        assert self.service is not None
        batcher: DynamicBatcher | None = None
        if info.batch:
            opts = info.options
            batcher = self._new_batcher(
                getattr(self.service, info.name),
                opts.max_batch_size or self.config.max_batch_size,
                opts.max_wait_ms if opts.max_wait_ms is not None else self.config.max_wait_ms,
                info.name,
            )
            self._handler_batchers[info.name] = batcher
        route = HandlerRoute(
            self.service, info, batcher=batcher, pool=self._pool, timeout=self.config.timeout_s
        )
        self._routes[f"/{info.name}"] = route
        add_handler_route(api, route)


def build_app(
    config: ReplicaConfig,
    *,
    runtime: ModelRuntime | None = None,
    service: Service | type[Service] | None = None,
    model: ServiceModel | None = None,
    start: bool = False,
) -> ReplicaApp:
    """The replica app for a model runtime or a Service (class or instance; ``model``: its registered
    model, ``self.model``); ``start=True`` loads it."""
    if isinstance(service, type):
        if not issubclass(service, Service):
            raise TypeError(f"{service!r} is not a subclass of aicloud.Service")
        service = service()
    app = ReplicaApp(config, runtime=runtime, service=service, model=model)
    return app.start() if start else app
