"""The console's pages, one module per page or concept; ``ROUTERS`` is what the app includes."""

from __future__ import annotations

from aicloud.server.console.pages import jobs, overview, runs, signin

ROUTERS = (signin.router, overview.router, jobs.router, runs.router)
