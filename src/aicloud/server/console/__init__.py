"""The web console: server-rendered pages under ``/`` with the API's auth (a token in a cookie).

Jinja2 templates (``templates/``, autoescaped), htmx and uPlot vendored as static files
(``static/vendor/``, no CDN, no build step). One module per page under ``pages/``; each route
depends on one of the console's auth decisions (:mod:`.session`) and calls the store and the
services directly, like an API route; errors become pages (:class:`.render.ConsoleRoute`).
See docs/console.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from aicloud.server.console.pages import ROUTERS
from aicloud.server.console.render import STATIC, not_found_page, wants_page

STATIC_PREFIX = "/static"
__all__ = ["STATIC_PREFIX", "mount_console", "not_found_page", "wants_page"]


def mount_console(app: FastAPI) -> None:
    """Add the console's pages and its static files to the control plane."""
    for router in ROUTERS:
        app.include_router(router, include_in_schema=False)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), name="console-static")
