"""The API description: ``/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``.

They need a token like every ``/api/v1`` route (``require_viewer``: any role; scoped endpoint and
replica tokens are refused as they are everywhere under ``/api/v1``). ``AICLOUD_PUBLIC_API_DOCS=true``
makes them public, for reading the docs in a browser, which cannot send a bearer header by itself.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from aicloud.server.deps import public, require_viewer

OPENAPI_PATH = "/openapi.json"


def docs_router(public_docs: bool) -> APIRouter:
    """The three routes, behind a token unless ``public_docs``; none of them is in the spec."""
    auth = [Depends(public if public_docs else require_viewer)]
    router = APIRouter(include_in_schema=False, dependencies=auth)

    @router.get(OPENAPI_PATH)
    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_PATH, title=f"{request.app.title} - Swagger UI", oauth2_redirect_url=None
        )

    @router.get("/redoc")
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} - ReDoc")

    return router
