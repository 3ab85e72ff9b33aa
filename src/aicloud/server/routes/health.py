"""Liveness: the one public route."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from aicloud import __version__
from aicloud.schemas import HealthOut
from aicloud.server.deps import public

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, dependencies=[Depends(public)])
def health() -> HealthOut:
    return HealthOut(status="ok", version=__version__)
