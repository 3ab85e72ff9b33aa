"""The console's pages, one module per page or concept; ``ROUTERS`` is what the app includes."""

from __future__ import annotations

from aicloud.server.console.pages import (
    admin,
    datasets,
    deployments,
    jobs,
    models,
    overview,
    runs,
    signin,
    sweeps,
    usage,
)

ROUTERS = (
    signin.router,
    overview.router,
    datasets.router,
    jobs.router,
    runs.router,
    models.router,
    deployments.router,
    sweeps.router,
    usage.router,
    admin.router,
)
