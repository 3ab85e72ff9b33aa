"""The control-plane FastAPI application."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from aicloud import __version__
from aicloud.blobs import open_blob_store
from aicloud.config import Settings
from aicloud.errors import AicloudError, code_for_status
from aicloud.gateway.asgi import PREFIX as ENDPOINTS_PREFIX
from aicloud.gateway.asgi import EndpointApp, mount_endpoints
from aicloud.gateway.openai import PREFIX as OPENAI_PREFIX
from aicloud.gateway.openai import OpenAIApp, mount_openai
from aicloud.schemas.api import MAX_JSON_DEPTH
from aicloud.server.bootstrap import bootstrap
from aicloud.server.console import mount_console, not_found_page, wants_page
from aicloud.server.home import prepare_home
from aicloud.server.routes import (
    _mlflow,
    admin,
    alerts,
    blobs,
    datasets,
    deployments,
    docs,
    edge,
    embeddings,
    health,
    jobs,
    metrics,
    mlflow_artifacts,
    mlflow_experiments,
    mlflow_runs,
    models,
    monitoring,
    run_artifacts,
    runs,
    secrets,
    sweeps,
    tokens,
    usage,
    workspaces,
    zoo,
)
from aicloud.server.services import alerts as alert_service
from aicloud.server.services.jobs import JobLauncher
from aicloud.server.services.replicas import ReplicaLauncher
from aicloud.server.services.sweeps import SweepLauncher
from aicloud.server.state import AppState
from aicloud.store import open_store

if TYPE_CHECKING:
    from aicloud.executors.sandbox import Sandbox

log = logging.getLogger("aicloud.server")


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        unknown = err.get("type") == "extra_forbidden"
        message = "unknown field: check its spelling" if unknown else str(err.get("msg", ""))
        out.append({"field": ".".join(loc) or "body", "message": message})
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": {...}}``; nothing leaks a stack trace."""

    @app.exception_handler(AicloudError)
    async def _aicloud(_: Request, exc: AicloudError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return JSONResponse(exc.to_payload(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
        return _error(422, "validation_error", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and wants_page(request):
            return not_found_page(request)  # a browser at an address nothing serves: the console's page
        code = code_for_status(exc.status_code)
        message = str(exc.detail) if exc.status_code != 404 else "no such route"
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's json.loads of a body nested ~1000 deep
            message = f"the JSON body is nested too deeply: at most {MAX_JSON_DEPTH} levels"
        return _error(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", "internal server error; see the server log")


class ControlPlaneApp(FastAPI):
    """The control plane. Endpoint traffic (``/v1/endpoints/...``) goes straight to the gateway's raw
    ASGI app, before FastAPI's middleware and routing (see :mod:`aicloud.gateway.asgi`)."""

    endpoint_app: EndpointApp | None = None
    openai_app: OpenAIApp | None = None  # /openai/v1/...: the workspace's OpenAI API (gateway/openai.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoints = self.endpoint_app
        if endpoints is not None and scope["type"] == "http" and scope["path"].startswith(ENDPOINTS_PREFIX):
            scope["app"] = self
            await endpoints(scope, receive, send)
            return
        openai = self.openai_app
        if openai is not None and scope["type"] == "http" and scope["path"].startswith(OPENAI_PREFIX):
            scope["app"] = self
            await openai(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def open_state(settings: Settings) -> AppState:
    prepare_home(settings)
    store = open_store(settings.resolved_database_url, migrate=True)
    blobs = open_blob_store(
        settings.resolved_blob_url, master_key=settings.master_key, home=str(settings.home)
    )
    bootstrap(settings, store)
    return AppState(settings=settings, store=store, blobs=blobs)


def create_app(
    settings: Settings | None = None, state: AppState | None = None, sandbox: Sandbox | bool | None = True
) -> ControlPlaneApp:
    """Build the control plane. ``state`` lets tests inject stores; otherwise they open at start-up.
    ``sandbox``: the workloads' sandbox (:func:`aicloud.executors.workload_sandbox`); True: find it
    at start-up (``AICLOUD_ISOLATION``)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app_state = state or open_state(settings)
        app.state.aicloud = app_state
        if app_state.jobs is None or app_state.deployments is None:
            from aicloud.controllers.deployments import DeploymentController
            from aicloud.controllers.jobs import JobController
            from aicloud.executors import make_executor, workload_sandbox

            chosen = workload_sandbox(settings) if sandbox is True else sandbox or None
            if chosen is not None:  # uploaded files are parsed in the sandbox too
                app_state.parsers.confine = functools.partial(chosen.confine, workload_id="parser")
                app_state.compress_confine = functools.partial(chosen.confine, workload_id="compress")
            executor = make_executor(settings, sandbox=chosen)
            launcher = JobLauncher(app_state)
            app_state.jobs = JobController(
                app_state.store.jobs, executor, settings, launcher.launch, launcher.finished
            )
            replicas = ReplicaLauncher(app_state, launcher.server_url())
            # The gateway reaches replicas on 127.0.0.1: on Ray they stay on this machine's node.
            replica_executor = (
                executor
                if settings.executor == "local"
                else make_executor(settings, replicas=True, sandbox=chosen)
            )
            app_state.deployments = DeploymentController(
                app_state.store,
                replica_executor,
                app_state.endpoints,
                settings,
                replicas.launch,
                keys=replicas,
                on_removed=replicas.revoke_token,
                aliases=replicas.alias_version,
            )
            # the warm templates that the deployments there are will fork from (they start in the
            # background): after a restart, a deployment scaled to zero answers from a template too
            replica_executor.prepare(replicas.templates_needed())
        sweep_controller = app_state.sweeps = SweepLauncher(app_state).controller()
        alert_controller = app_state.alerts = alert_service.controller(app_state)
        app_state.jobs.start()
        app_state.deployments.start()
        sweep_controller.start()
        alert_controller.start()
        app_state.parsers.start()
        try:
            yield
        finally:
            app_state.parsers.close()
            alert_controller.stop()
            sweep_controller.stop()
            app_state.deployments.stop()
            app_state.jobs.stop()
            app_state.jobs.executor.close()  # the warm templates (their replicas, if any, go on)
            app_state.deployments.replicas.executor.close()
            await app_state.gateway.aclose()
            app_state.store.close()

    app = ControlPlaneApp(
        title="aicloud",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted AI cloud control plane. Every route but /healthz needs a bearer token.",
        generate_unique_id_function=lambda route: route.name,
        openapi_url=None,  # served by routes/docs.py, behind a token unless AICLOUD_PUBLIC_API_DOCS
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)  # /metrics, /metrics/replicas/..., /api/v1/prometheus/targets
    app.include_router(docs.docs_router(settings.public_api_docs))
    routers = (
        workspaces,
        tokens,
        datasets,
        secrets,
        admin,
        blobs,
        jobs,
        runs,
        run_artifacts,
        models,
        deployments,
        edge,
        usage,
        monitoring,
        embeddings,
        alerts,
        zoo,  # after models: a model of a workspace named "zoo" keeps its routes
    )
    for module in routers:
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(sweeps.router, prefix="/api/v1")
    # the MLflow tracking API (docs/mlflow.md): its fallback answers every other /mlflow path
    for mlflow_module in (mlflow_experiments, mlflow_runs, mlflow_artifacts):
        app.include_router(mlflow_module.router, prefix=_mlflow.PREFIX)
    app.include_router(_mlflow.fallback, prefix=_mlflow.PREFIX)
    app.endpoint_app = mount_endpoints(app)
    app.openai_app = mount_openai(app)
    mount_console(app)  # the web console's pages under / and its static files (docs/console.md)
    return app
