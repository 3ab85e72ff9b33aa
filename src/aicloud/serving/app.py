"""The replica's ASGI app: predict, the Open Inference Protocol, a Service's handlers, metrics.

    app = build_app(ReplicaConfig(name="digits", key="k"), runtime=ArtifactRuntime("model/"))
    app.start()        # load, setup(), warm up: /v2/health/ready turns 200

:class:`ReplicaApp` is a thin ASGI layer in front of a FastAPI app. For every request but the two health
routes it checks, in order: draining (503), ``Authorization: Bearer <key>`` (constant-time; 401), and
the body size (``Content-Length`` first, then while reading; 413). It reads the body once and hands
it to the routes (``scope["aicloud.body"]``), so ``/predict`` parses the raw bytes with ``json.loads``
and answers a plain ``Response``: no request model, no copies. Errors have the aicloud shape and never
carry a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from aicloud.errors import (
    AicloudError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthenticatedError,
    UnavailableError,
)
from aicloud.serving.batcher import DynamicBatcher, QueueFullError, RequestTimeoutError
from aicloud.serving.cache import ResponseCache, cache_key
from aicloud.serving.metrics import ReplicaMetrics
from aicloud.serving.oip import DTYPES, HEADER, InferRequest, encode_infer_response, parse_infer_request
from aicloud.serving.runtime import ModelRuntime, Prepared, bad_input
from aicloud.serving.service import HandlerInfo, Service, handlers_of

log = logging.getLogger("aicloud.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH = frozenset({"/v2/health/live", "/v2/health/ready"})
JSON = "application/json"


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
        known = {"max_batch_size", "max_wait_ms", "max_queue", "timeout_s", "cache_bytes", "max_body_bytes"}
        values = {k: spec[k] for k in known if spec.get(k) is not None}
        return cls(**{**values, **overrides})


@dataclass
class ReplicaState:
    ready: bool = False
    draining: bool = False
    inflight: int = 0
    message: str = "starting"
    batchers: list[DynamicBatcher] = field(default_factory=list)


class ClientGone(Exception):
    """The client disconnected while its request waited."""


def error_response(exc: AicloudError, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(exc.to_payload(), default=str).encode()
    headers = dict(headers or {})
    if isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return Response(body, status_code=exc.status_code, media_type=JSON, headers=headers)


async def _send_error(send: Send, exc: AicloudError, extra: dict[str, str] | None = None) -> None:
    body = json.dumps(exc.to_payload()).encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ReplicaApp:
    """The ASGI app of one replica (see the module docstring); :meth:`start` makes it ready."""

    def __init__(
        self, config: ReplicaConfig, runtime: ModelRuntime | None = None, service: Service | None = None
    ) -> None:
        if (runtime is None) == (service is None):
            raise TypeError("build_app needs exactly one of runtime=... (a model) or service=... (a Service)")
        self.config = config
        self.runtime = runtime
        self.service = service
        self.state = ReplicaState()
        self.metrics = ReplicaMetrics()
        self.cache = ResponseCache(config.cache_bytes) if config.cache_bytes > 0 else None
        self._key = f"Bearer {config.key}".encode()
        self._pool = ThreadPoolExecutor(config.handler_threads, thread_name_prefix="aicloud-handler")
        self.handlers: dict[str, HandlerInfo] = handlers_of(type(service)) if service is not None else {}
        self._handler_batchers: dict[str, DynamicBatcher] = {}
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
            self.state.message = "setup"
            self.service.setup()
        self.state.ready = True
        self.state.message = "ready"
        return self

    def begin_drain(self) -> None:
        self.state.draining = True
        self.state.message = "draining"

    async def close(self) -> None:
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
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.state.draining:
            retry = {"Retry-After": str(self.config.retry_after_s)}
            await _send_error(send, UnavailableError("the replica is draining; retry on another"), retry)
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
            await _send_error(
                send, UnauthenticatedError("missing or wrong replica key (Authorization: Bearer)")
            )
            return
        limit = self.config.max_body_bytes
        if length is not None and length > limit:
            await _send_error(send, self._too_large(length), {"Connection": "close"})
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
                    await _send_error(send, self._too_large(total), {"Connection": "close"})
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
        return path if name in self.handlers else "other"

    # --- helpers for routes
    async def _submit(self, request: Request, batcher: DynamicBatcher, value: Any, size: int) -> Any:
        """Queue one request's work; a client that disconnects meanwhile drops its work."""
        task = asyncio.ensure_future(batcher.submit(value, size))
        watch = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if task.done():
            return task.result()
        task.cancel()
        raise ClientGone()

    def _body(self, request: Request) -> bytes:
        body = request.scope.get("aicloud.body")
        return body if isinstance(body, bytes) else b""

    # --- routes
    def _build_api(self) -> FastAPI:
        title = f"aicloud replica: {self.config.name}"

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield
            await self.close()

        api = FastAPI(title=title, docs_url=None, redoc_url=None, lifespan=lifespan)
        name = self.config.name

        @api.exception_handler(AicloudError)
        async def _aicloud_error(request: Request, exc: AicloudError) -> Response:
            return error_response(exc)

        @api.exception_handler(RequestValidationError)
        async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
            details = []
            for err in exc.errors():
                loc = [str(p) for p in err.get("loc", ()) if p != "body"]
                details.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", ""))})
            first = details[0] if details else {"field": "body", "message": "invalid"}
            return error_response(BadRequestError(f"{first['field']}: {first['message']}", details=details))

        @api.exception_handler(StarletteHTTPException)
        async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
            if exc.status_code == 404:
                return error_response(NotFoundError(f"no route {request.url.path}", details=None))
            err = AicloudError(str(exc.detail))
            err.status_code = exc.status_code  # type: ignore[misc]
            err.code = "bad_request" if exc.status_code < 500 else "internal"  # type: ignore[misc]
            return error_response(err)

        @api.exception_handler(Exception)
        async def _internal(request: Request, exc: Exception) -> Response:
            if isinstance(exc, ClientGone):
                return Response(status_code=499)
            log.exception("unhandled error on %s", request.url.path)
            return error_response(AicloudError(f"internal error ({type(exc).__name__}); see the replica log"))

        @api.get("/v2/health/live", include_in_schema=True)
        async def live() -> Response:
            return Response(b'{"live":true}', media_type=JSON)

        @api.get("/v2/health/ready")
        async def ready() -> Response:
            if self.state.ready and not self.state.draining:
                return Response(b'{"ready":true}', media_type=JSON)
            return error_response(UnavailableError(f"not ready: {self.state.message}"))

        @api.get("/v2")
        async def server_metadata() -> dict[str, Any]:
            from aicloud import __version__

            return {"name": "aicloud", "version": __version__, "extensions": ["binary_tensor_data"]}

        def check_model(model: str) -> None:
            if model != name:
                raise NotFoundError.of("model", model)

        def model_metadata() -> dict[str, Any]:
            doc: dict[str, Any] = {"name": name, "versions": [self.config.version], "platform": "aicloud"}
            if self.runtime is not None and self.state.ready:
                doc["inputs"] = [t.to_json() for t in self.runtime.inputs]
                doc["outputs"] = [t.to_json() for t in self.runtime.outputs]
            else:
                doc["inputs"], doc["outputs"] = [], []
            return doc

        @api.get("/v2/models/{model}")
        async def model_meta(model: str) -> dict[str, Any]:
            check_model(model)
            return model_metadata()

        @api.get("/v2/models/{model}/versions/{version}")
        async def model_meta_version(model: str, version: str) -> dict[str, Any]:
            check_model(model)
            return model_metadata()

        async def model_ready_impl(model: str) -> Response:
            check_model(model)
            if self.state.ready and not self.state.draining:
                return Response(b'{"ready":true}', media_type=JSON)
            return error_response(UnavailableError(f"not ready: {self.state.message}"))

        @api.get("/v2/models/{model}/ready")
        async def model_ready(model: str) -> Response:
            return await model_ready_impl(model)

        @api.get("/v2/models/{model}/versions/{version}/ready")
        async def model_ready_version(model: str, version: str) -> Response:
            return await model_ready_impl(model)

        @api.post("/v2/models/{model}/infer")
        async def infer(model: str, request: Request) -> Response:
            check_model(model)
            return await self._infer(request)

        @api.post("/v2/models/{model}/versions/{version}/infer")
        async def infer_version(model: str, version: str, request: Request) -> Response:
            check_model(model)
            return await self._infer(request)

        @api.get("/metrics")
        async def metrics() -> Response:
            return Response(self.metrics.render(), media_type=self.metrics.content_type)

        if self.runtime is not None:

            @api.post("/predict")
            async def predict(request: Request) -> Response:
                return await self._predict(request)

        for info in self.handlers.values():
            self._add_handler(api, info)
        return api

    async def _predict(self, request: Request) -> Response:
        runtime, batcher = self.runtime, self.batcher
        assert runtime is not None and batcher is not None
        try:
            doc = json.loads(self._body(request))
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_input("body", f"not valid JSON: {exc}") from None
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
        outputs = await self._submit(request, batcher, prepared, prepared.rows)
        body = json.dumps({"outputs": outputs}, separators=(",", ":")).encode()
        if key is not None and self.cache is not None:
            self.cache.put(key, body)
        return Response(body, media_type=JSON)

    async def _infer(self, request: Request) -> Response:
        runtime, batcher = self.runtime, self.batcher
        if runtime is None or batcher is None:
            raise BadRequestError("this deployment serves a Service: call its handlers, not OIP infer")
        req = parse_infer_request(self._body(request), request.headers.get(HEADER))
        prepared = self._prepare_tensors(runtime, req)
        outputs = await self._submit(request, batcher, prepared, prepared.rows)
        spec = runtime.outputs[0]
        if spec.datatype == "BYTES":
            array = np.array([str(v) for v in outputs], dtype=object)
        else:
            array = np.asarray(outputs, dtype=DTYPES[spec.datatype])
        body, header_length = encode_infer_response(
            self.config.name, self.config.version, req, {spec.name: (spec.datatype, array)}
        )
        if header_length is None:
            return Response(body, media_type=JSON)
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    def _prepare_tensors(self, runtime: ModelRuntime, req: InferRequest) -> Prepared:
        specs = runtime.inputs
        if len(specs) == 1 and specs[0].datatype != "BYTES":
            spec = specs[0]
            tensor = req.inputs.get(spec.name)
            if tensor is None and len(req.inputs) == 1:
                tensor = next(iter(req.inputs.values()))
            if tensor is None:
                raise bad_input("inputs", f"expected one tensor named {spec.name!r}")
            width = spec.shape[1]
            if tensor.dtype == object:
                raise bad_input(f"inputs.{spec.name}", "expected a numeric datatype (FP32, FP64, INT64...)")
            if tensor.ndim != 2 or tensor.shape[1] != width:
                raise bad_input(
                    f"inputs.{spec.name}", f"expected shape [-1, {width}], got {list(tensor.shape)}"
                )
            if tensor.shape[0] == 0:
                raise bad_input(f"inputs.{spec.name}", "empty batch: send at least one row")
            matrix = tensor.astype(np.float64)
            if not np.isfinite(matrix).all():
                r, c = np.argwhere(~np.isfinite(matrix))[0]
                raise bad_input(f"inputs.{spec.name}[{r}][{c}]", "expected a finite number")
            return Prepared(matrix=matrix)
        rows: int | None = None
        columns: dict[str, list[Any]] = {}
        for spec in specs:
            tensor = req.inputs.get(spec.name)
            if tensor is None:
                raise bad_input("inputs", f"missing tensor {spec.name!r}")
            flat = tensor.reshape(-1) if tensor.ndim == 1 or tensor.shape[1:] == (1,) else None
            if flat is None:
                raise bad_input(f"inputs.{spec.name}", f"expected shape [-1], got {list(tensor.shape)}")
            if rows is not None and len(flat) != rows:
                raise bad_input(f"inputs.{spec.name}", f"expected {rows} values like the other inputs")
            rows = len(flat)
            columns[spec.name] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat.tolist()
            ]
        records = [{k: columns[k][i] for k in columns} for i in range(rows or 0)]
        return runtime.prepare(records, field="inputs")

    def _add_handler(self, api: FastAPI, info: HandlerInfo) -> None:
        assert self.service is not None
        method = getattr(self.service, info.name)
        adapter = info.response_adapter
        timeout = self.config.timeout_s
        batcher: DynamicBatcher | None = None
        if info.batch:
            opts = info.options
            batcher = self._new_batcher(
                method,
                opts.max_batch_size or self.config.max_batch_size,
                opts.max_wait_ms if opts.max_wait_ms is not None else self.config.max_wait_ms,
                info.name,
            )
            self._handler_batchers[info.name] = batcher

        async def endpoint(request: Request, body: Any) -> Response:
            kwargs = {p: getattr(body, p) for p in info.params}
            try:
                if batcher is not None:
                    result = await self._submit(request, batcher, kwargs[info.params[0]], 1)
                else:
                    async with asyncio.timeout(timeout):
                        if info.is_async:
                            result = await method(**kwargs)
                        else:
                            loop = asyncio.get_running_loop()
                            result = await loop.run_in_executor(self._pool, partial(method, **kwargs))
            except (AicloudError, ClientGone):
                raise
            except TimeoutError:
                raise RequestTimeoutError(timeout) from None
            except Exception as exc:
                log.error("handler %s raised", info.name, exc_info=exc)
                raise AicloudError(
                    f"the handler {info.name!r} raised {type(exc).__name__}; see the replica log"
                ) from None
            try:
                payload = adapter.dump_json(result)
            except Exception as exc:
                log.error(
                    "handler %s returned a value that does not match its return type: %s", info.name, exc
                )
                raise AicloudError(
                    f"the handler {info.name!r} returned a value that does not match its return type"
                ) from None
            return Response(payload, media_type=JSON)

        endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
                inspect.Parameter(
                    "body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=info.request_model
                ),
            ]
        )
        endpoint.__name__ = info.name
        api.add_api_route(
            f"/{info.name}",
            endpoint,
            methods=["POST"],
            response_model=info.response_type,
            name=info.name,
            summary=f"{type(self.service).__name__}.{info.name}",
            description=inspect.getdoc(method) or None,
        )


def build_app(
    config: ReplicaConfig,
    *,
    runtime: ModelRuntime | None = None,
    service: Service | type[Service] | None = None,
    start: bool = False,
) -> ReplicaApp:
    """The replica app for a model runtime or a Service (class or instance); ``start=True`` loads it."""
    if isinstance(service, type):
        if not issubclass(service, Service):
            raise TypeError(f"{service!r} is not a subclass of aicloud.Service")
        service = service()
    app = ReplicaApp(config, runtime=runtime, service=service)
    return app.start() if start else app
