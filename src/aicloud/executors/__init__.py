"""Executors: where workloads run. One interface (:class:`Executor`), chosen by ``AICLOUD_EXECUTOR``.

``local`` (the default) runs each job as a supervised subprocess tree on this machine
(:class:`~aicloud.executors.local.LocalExecutor`); ``ray`` runs it on a Ray cluster
(:class:`~aicloud.executors.ray.RayExecutor`, the optional extra ``aicloud[ray]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aicloud.executors.base import Executor, ExitInfo, LaunchError, LaunchRequest
from aicloud.executors.local import LocalExecutor

if TYPE_CHECKING:
    from aicloud.config import Settings

__all__ = ["Executor", "ExitInfo", "LaunchError", "LaunchRequest", "LocalExecutor", "make_executor"]


def make_executor(settings: Settings, *, replicas: bool = False) -> Executor:
    """The executor named by ``settings.executor``; a ValueError says what is missing.

    ``replicas``: the executor of serving replicas, which the gateway reaches on 127.0.0.1:
    with ``ray`` they are placed on the control plane's own Ray node.
    """
    if settings.executor == "local":
        return LocalExecutor.from_settings(settings)
    if settings.executor == "ray":
        try:
            from aicloud.executors.ray import RayExecutor
        except ImportError as exc:
            raise ValueError(f"AICLOUD_EXECUTOR=ray needs Ray ({exc}): pip install 'aicloud[ray]'") from None
        return RayExecutor.from_settings(settings, local_node=replicas)
    raise ValueError(f"unknown executor {settings.executor!r}: AICLOUD_EXECUTOR must be 'local' or 'ray'")
