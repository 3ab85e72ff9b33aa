"""Executors: where workloads run. One interface (:class:`Executor`), chosen by ``AICLOUD_EXECUTOR``.

``local`` (the default) runs each job as a supervised subprocess tree on this machine
(:class:`~aicloud.executors.local.LocalExecutor`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aicloud.executors.base import Executor, ExitInfo, LaunchError, LaunchRequest
from aicloud.executors.local import LocalExecutor

if TYPE_CHECKING:
    from aicloud.config import Settings

__all__ = ["Executor", "ExitInfo", "LaunchError", "LaunchRequest", "LocalExecutor", "make_executor"]


def make_executor(settings: Settings) -> Executor:
    """The executor named by ``settings.executor``."""
    if settings.executor == "local":
        return LocalExecutor.from_settings(settings)
    raise ValueError(f"unknown executor {settings.executor!r}: AICLOUD_EXECUTOR must be 'local'")
